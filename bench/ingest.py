"""Ingest benchmark: the engine on N generated rows against django-import-export's tuned bulk import.

    DATABASE_URL=postgres://... REDIS_URL=redis://... python -m bench.ingest --rows 1000000

It creates (and afterwards drops) its own database, ``bench_ingest``, on the
server DATABASE_URL names, so it never touches that database's data. The last
line printed is one JSON object.

Two baselines run in the same process on the same 20k-row slice, each into an
empty table. ``baseline_rows_per_s`` and ``speedup`` are the issue's baseline:
the library's bulk import with use_bulk, batch_size=1000 and skip_diff (and its
default instance loader). ``cached_baseline_rows_per_s`` and
``speedup_vs_cached`` add the one further knob of the library's performance
guide for create-or-update imports, CachedInstanceLoader.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import psutil

BENCH_DB = "bench_ingest"
BASELINE_ROWS = 20_000
# (prefix, digits after it, spellings): valid mobile ranges written the ways people write them.
COUNTRIES = [
    ("+25471", 7, ("{p} {a} {b}", "whatsapp:{e}", "00{n}", "{e}")),
    ("+234803", 7, ("{e}", "+234 803 {r}", "sms:{e}")),
    ("+4474", 8, ("{e}", "+44 74{r}", "00{n}")),
    ("+12125", 6, ("{e}", "+1 (212) 5{a}-{b}", "{e}")),
]
TIMEZONES = ["Africa/Nairobi", "Africa/Lagos", "Europe/London", "America/New_York", "", "UTC"]
TOPICS = ["promotions", "alerts", "newsletter", "vip"]
PLANS = ["free", "basic", "pro", "enterprise"]
INVALID = ["12345", "+999 123", "not a phone", "+2547", "0712345678"]


def _phone(rng: random.Random, index: int) -> str:
    prefix, width, spellings = COUNTRIES[index % len(COUNTRIES)]
    digits = f"{index // len(COUNTRIES) + 10 ** (width - 1):0{width}d}"[-width:]
    e164 = prefix + digits
    half = len(digits) // 2
    return rng.choice(spellings).format(
        e=e164, n=e164[1:], p=prefix, a=digits[:half], b=digits[half:], r=digits[:3] + " " + digits[3:]
    )


def generate_csv(path: Path, rows: int, seed: int = 7) -> None:
    """Rows with mixed phone spellings, ~2 % invalid, ~5 % duplicates, 5 typed attributes, zones and topics."""
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "name", "timezone", "topics", "age", "score", "vip", "joined", "plan"])
        for index in range(rows):
            roll = rng.random()
            if roll < 0.02:
                phone = rng.choice(INVALID)
            elif roll < 0.07 and index > 10:
                phone = _phone(rng, rng.randrange(0, index))
            else:
                phone = _phone(rng, index)
            topics = "|".join(sorted({rng.choice(TOPICS) for _ in range(rng.choice((0, 0, 0, 0, 0, 0, 1, 1, 1, 2)))}))
            writer.writerow(
                [
                    phone,
                    f"Contact {index}",
                    rng.choice(TIMEZONES),
                    topics,
                    rng.randint(18, 90),
                    round(rng.random() * 100, 2),
                    rng.choice(("true", "false")),
                    f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                    rng.choice(PLANS),
                ]
            )


def slice_csv(source: Path, target: Path, rows: int) -> None:
    """The first rows, each phone once: bulk mode of django-import-export cannot take in-file duplicates."""
    from audience.phones import InvalidPhone, normalize_phone

    with open(source, encoding="utf-8", newline="") as src, open(target, "w", encoding="utf-8", newline="") as dst:
        reader, writer = csv.reader(src), csv.writer(dst)
        writer.writerow(next(reader))
        seen: set[str] = set()
        for number, row in enumerate(reader):
            if number >= rows:
                break
            try:
                phone = normalize_phone(row[0])
            except InvalidPhone:
                phone = row[0]
            if phone not in seen:
                seen.add(phone)
                writer.writerow(row)


class TreeMemory:
    """Samples the resident memory of this process and all its children (the worker pool).

    Listing the children walks all of /proc, which costs more CPU than the sampling itself
    (the walk at 20 Hz took a tenth of a core from the run it measures), so the list is
    refreshed once a second and the known processes are sampled every ``interval``.
    """

    def __init__(self, interval: float = 0.05, refresh: float = 1.0):
        self.interval = interval
        self.refresh = refresh
        self.peak = 0
        self._processes: list[psutil.Process] = []
        self._listed_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        now = time.monotonic()
        if now - self._listed_at >= self.refresh:
            me = psutil.Process()
            self._processes, self._listed_at = [me, *me.children(recursive=True)], now
        total = 0
        for process in self._processes:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _server_url(url: str, database: str) -> str:
    return urlunparse(urlparse(url)._replace(path="/" + database))


def recreate_database(url: str) -> str:
    import psycopg

    admin_url = _server_url(url, "postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    return _server_url(url, BENCH_DB)


def drop_database(url: str) -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect(_server_url(url, "postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # Production settings: with DEBUG on, Django would also record every query both imports run.
    os.environ.setdefault("DEBUG", "false")
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(48))
    os.environ.setdefault("PHONE_HASH_KEY", secrets.token_urlsafe(48))
    os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def settle() -> None:
    """Write out what earlier work left in shared buffers (the last run's drop, the other import) before timing.

    Each measured import then starts from the same clean server, and pays for its own
    writes only. Needs superuser or pg_checkpoint; skipped (and said) without.
    """
    from django.db import DatabaseError, connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("CHECKPOINT")
    except DatabaseError as exc:
        print(f"no CHECKPOINT before timing ({exc})", file=sys.stderr, flush=True)


def truncate_contacts() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE audience_contacttopic, audience_consentevent, audience_contact, audience_importrowerror, "
            "audience_importjob RESTART IDENTITY CASCADE"
        )
        cursor.execute("VACUUM ANALYZE audience_contact")


def run_baseline(path: Path, *, cached: bool) -> tuple[int, float]:
    """django-import-export's own tuned bulk import, upserting by phone as the engine does.

    use_bulk, batch_size=1000 and skip_diff, as the issue names them. With its
    default instance loader the library runs one SELECT per row to find the
    existing contact by phone (about two thirds of its time); ``cached=True``
    adds CachedInstanceLoader, the guide's remedy, which finds them all in one
    query. Phones are normalised first so that the cached lookup finds existing
    contacts however they are spelt, and only then: the row hook does not parse
    a normalised number again.
    """
    import tablib
    from import_export.instance_loaders import CachedInstanceLoader, ModelInstanceLoader

    from audience.phones import InvalidPhone, normalize_phone
    from audience.resources import ContactImportResource

    class BulkResource(ContactImportResource):
        topics = None

        class Meta(ContactImportResource.Meta):
            use_bulk = True
            batch_size = 1000
            skip_diff = True
            skip_unchanged = False
            instance_loader_class = CachedInstanceLoader if cached else ModelInstanceLoader
            fields = tuple(name for name in ContactImportResource.Meta.fields if name != "topics")

        def before_import(self, dataset, **kwargs):
            super().before_import(dataset, **kwargs)
            self.normalized: set[str] = set()
            column = dataset.headers.index("phone")
            for index, row in enumerate(dataset):
                try:
                    phone = normalize_phone(row[column])
                except InvalidPhone:
                    continue  # before_import_row reports it as the row's error
                self.normalized.add(phone)
                dataset[index] = row[:column] + (phone,) + row[column + 1 :]

        def before_import_row(self, row, **kwargs):
            # Bulk mode writes no many-to-many links: the topics are left out, not kept as an attribute.
            row.pop("topics", None)
            super().before_import_row(row, **kwargs)

        def clean_phone(self, value) -> str:
            # Normalised once, above: a tuned import does not parse the number a second time.
            return value if value in self.normalized else super().clean_phone(value)

    started = time.perf_counter()
    dataset = tablib.Dataset().load(path.read_text(encoding="utf-8"), format="csv")
    result = BulkResource().import_data(dataset, dry_run=False, raise_errors=False)
    seconds = time.perf_counter() - started
    if result.has_errors():
        raise SystemExit(f"baseline import failed: {result.base_errors or result.row_errors()[:3]}")
    return len(dataset), seconds


def run_engine(path: Path) -> tuple[object, float]:
    from audience.ingest import services
    from audience.models import ImportSource

    started = time.perf_counter()
    options = services.import_options_clean(default_consent="opted_in")
    job = services.import_job_create(source=ImportSource.COMMAND, options=options, path=str(path), actor="bench")
    job = services.import_job_run(services.import_job_claim(job.pk))
    return job, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--baseline-rows", type=int, default=BASELINE_ROWS)
    parser.add_argument("--keep-db", action="store_true", help="leave the bench_ingest database for inspection")
    args = parser.parse_args(argv)
    server = os.environ.get("DATABASE_URL")
    if not server or not os.environ.get("REDIS_URL"):
        raise SystemExit("set DATABASE_URL and REDIS_URL (the bench creates its own database on that server)")
    bench_url = recreate_database(server)
    setup_django(bench_url)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        full, part = Path(tmp) / "contacts.csv", Path(tmp) / "baseline.csv"
        print(f"generating {args.rows:,} rows ...", file=sys.stderr, flush=True)
        generate_csv(full, args.rows)
        slice_csv(full, part, args.baseline_rows)
        # The engine first, on an empty table, so the baseline's memory does not count against it.
        settle()
        with TreeMemory() as memory:
            job, seconds = run_engine(full)
        print(
            f"engine: {job.status}, {job.total_rows:,} rows, {job.created_count:,} created, "
            f"{job.invalid_count:,} invalid, {job.duplicate_count:,} duplicates in {seconds:.2f} s "
            f"(phases: {job.details.get('seconds')})",
            file=sys.stderr,
            flush=True,
        )
        rates = {}
        for loader in ("default", "cached"):
            truncate_contacts()
            settle()
            baseline_rows, baseline_seconds = run_baseline(part, cached=loader == "cached")
            rates[loader] = baseline_rows / baseline_seconds
            print(
                f"baseline ({loader} instance loader): {baseline_rows:,} rows in {baseline_seconds:.2f} s",
                file=sys.stderr,
                flush=True,
            )
    if not args.keep_db:
        drop_database(server)
    rows_per_s = args.rows / seconds
    print(
        json.dumps(
            {
                "bench": "ingest",
                "rows": args.rows,
                "seconds": round(seconds, 2),
                "rows_per_s": round(rows_per_s),
                "peak_rss_mb": round(memory.peak / 2**20, 1),
                "baseline_rows_per_s": round(rates["default"]),
                "speedup": round(rows_per_s / rates["default"], 1),
                "cached_baseline_rows_per_s": round(rates["cached"]),
                "speedup_vs_cached": round(rows_per_s / rates["cached"], 1),
                "phases_s": job.details.get("seconds"),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
