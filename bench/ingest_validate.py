"""Validation micro-benchmark: CPU time per row of process_chunk on bench.ingest's CSV, in one process.

    python -m bench.ingest_validate --rows 50000

No database or Redis: the file is generated (bench.ingest's generator), cut into chunks as an import
cuts it, and each chunk validated in this process. Time is CPU time (time.process_time), so other
work on a shared machine counts for less than in wall time; each figure is the median of --repeats
runs. The baseline measured in the same run is csv.reader parsing the same chunks (decoding
included), so ``ratio_to_parse`` is comparable between machines and runs. The last line printed
is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from audience.ingest.readers import Layout

# The figure of the commit before validation was merged into one RowValidator (e0f3e8d, with its separate
# fast path for clean CSV records). This harness runs on a checkout of it too: docs/benchmarks.md.
PRE_MERGE = {"commit": "e0f3e8d", "validate_us_per_row": 7.5}


def setup_django() -> None:
    """Settings only: validation reads settings (the default country) but no database."""
    from bench._util import production_settings

    for key, value in production_settings().items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("DATABASE_URL", "postgres://bench@127.0.0.1/unused")
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1/0")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def chunks_of(path: Path) -> tuple[list, Layout]:
    """The file's chunks and layout, as an import with the default options reads them."""
    import dataclasses

    from django.conf import settings

    from audience.ingest.engine import inspect_file, iter_chunks

    layout = inspect_file(str(path), "csv")
    layout = dataclasses.replace(layout, default_region=settings.PHONE_DEFAULT_COUNTRY or "")
    chunks, _ = iter_chunks(str(path), layout)
    return list(chunks), layout


def time_validation(chunks: list, layout: Layout) -> tuple[float, int, int]:
    """CPU seconds to validate every chunk, and the rows and valid rows counted."""
    from audience.ingest.validate import process_chunk

    rows = valid = 0
    started = time.process_time()
    for chunk in chunks:
        result = process_chunk(chunk, layout, 64)
        rows += result.rows
        valid += result.valid
    return time.process_time() - started, rows, valid


def time_parsing(chunks: list, layout: Layout) -> float:
    """CPU seconds for decoding the same chunks and reading their records with csv.reader, and nothing else."""
    started = time.process_time()
    for chunk in chunks:
        text = chunk.data.decode("utf-8")
        for _record in csv.reader(io.StringIO(text, newline=""), delimiter=layout.delimiter):
            pass
    return time.process_time() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    setup_django()
    from bench.ingest import generate_csv

    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        path = Path(tmp) / "contacts.csv"
        generate_csv(path, args.rows)
        chunks, layout = chunks_of(path)
    time_validation(chunks[:1], layout)  # warm: phone metadata, compiled patterns, time zones
    validate_s, parse_s = [], []
    for _ in range(args.repeats):  # interleaved, so a busy spell of the machine weighs on both alike
        parse_s.append(time_parsing(chunks, layout))
        seconds, rows, valid = time_validation(chunks, layout)
        validate_s.append(seconds)
    if rows != args.rows:
        raise SystemExit(f"validated {rows} rows, expected {args.rows}")
    validate_us = statistics.median(validate_s) / rows * 1e6
    parse_us = statistics.median(parse_s) / rows * 1e6
    print(
        f"validate {validate_us:.2f} us/row (runs: {', '.join(f'{s:.3f}' for s in validate_s)} s), "
        f"parse {parse_us:.2f} us/row, {valid:,} of {rows:,} rows valid",
        file=sys.stderr,
    )
    print(
        json.dumps(
            {
                "bench": "ingest_validate",
                "rows": rows,
                "valid_rows": valid,
                "chunks": len(chunks),
                "repeats": args.repeats,
                "clock": "process_time (CPU, one process)",
                "validate_us_per_row": round(validate_us, 2),
                "parse_us_per_row": round(parse_us, 2),
                "ratio_to_parse": round(validate_us / parse_us, 2),
                "pre_merge": PRE_MERGE,
                "python": sys.version.split()[0],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
