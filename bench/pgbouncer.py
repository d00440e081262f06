"""A private PgBouncer in transaction mode in front of a PostgreSQL server, for benchmarks and tests.

    python -m bench.pgbouncer postgres://postgres@127.0.0.1:5432/db   # prints its URL, runs until Ctrl-C

It runs Debian's ``pgbouncer`` binary (1.18: no prepared statements across transactions) on a
free port of 127.0.0.1 with its files in a temporary directory: every database of the server
(``* = host= port=``), clients trusted (the server still checks its own users), ``pool_size``
server connections per database and user, at most ``max_clients`` clients. Run as root (CI),
PgBouncer refuses to start, so it switches to the ``postgres`` user (``-u``).

``Sampler`` polls the admin console (``SHOW POOLS``) and keeps the most client and server
connections seen at once: what the pooler saved.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import parse_qs, unquote, urlparse, urlunparse

from bench._util import free_port

RUN_AS = "postgres"  # PgBouncer will not run as root


def binary() -> str | None:
    """The pgbouncer program (Debian's package puts it in /usr/sbin), or None."""
    return shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(path, os.X_OK)), None
    )


class PgBouncer:
    def __init__(self, server_url: str, *, pool_size: int = 20, max_clients: int = 1000):
        parsed = urlparse(server_url)
        self.server_url = server_url
        # A server reached by its socket directory (?host=/dir, the embedded one) is reached the same way.
        self.host = parse_qs(parsed.query).get("host", [parsed.hostname or "127.0.0.1"])[0]
        self.server_port = parsed.port or 5432
        self.user = unquote(parsed.username or "postgres")
        self.password = unquote(parsed.password or "")
        self.pool_size, self.max_clients = pool_size, max_clients
        self.port = 0
        self.directory = ""
        self.process: subprocess.Popen | None = None

    def url(self, database: str | None = None) -> str:
        """``server_url`` through the pooler (the same database unless another is named)."""
        parsed = urlparse(self.server_url)
        auth = parsed.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        path = f"/{database}" if database else parsed.path
        return urlunparse(parsed._replace(netloc=netloc, path=path, query=""))

    def admin_url(self) -> str:
        return self.url("pgbouncer")

    def _config(self) -> str:
        server = f"host={self.host} port={self.server_port}"
        if self.password:  # the pooler logs in to the server as the client's user, with this password
            server += f" user={self.user} password={self.password}"
        return "\n".join(
            [
                "[databases]",
                f"* = {server}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {self.port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {self.directory}/users.txt",
                f"admin_users = {self.user}",
                "pool_mode = transaction",
                f"default_pool_size = {self.pool_size}",
                f"max_client_conn = {self.max_clients}",
                "ignore_startup_parameters = extra_float_digits",
                f"logfile = {self.directory}/pgbouncer.log",
                f"pidfile = {self.directory}/pgbouncer.pid",
                "",
            ]
        )

    def start(self, timeout: float = 10.0) -> PgBouncer:
        program = binary()
        if program is None:
            raise RuntimeError("no pgbouncer program: apt-get install -y pgbouncer")
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="pgbouncer-")
        with open(os.path.join(self.directory, "pgbouncer.ini"), "w") as handle:
            handle.write(self._config())
        with open(os.path.join(self.directory, "users.txt"), "w") as handle:
            handle.write(f'"{self.user}" ""\n')
        command = [program]
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(RUN_AS)
            except KeyError:
                raise RuntimeError(f"pgbouncer will not run as root and there is no {RUN_AS!r} user") from None
            for name in (self.directory, *(os.path.join(self.directory, f) for f in os.listdir(self.directory))):
                os.chown(name, account.pw_uid, account.pw_gid)
            command += ["-u", RUN_AS]
        command.append(os.path.join(self.directory, "pgbouncer.ini"))
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer stopped at start: {self.log_tail()}")
            try:
                self.show("VERSION")
                return self
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pgbouncer did not start: {self.log_tail()}")

    def admin(self):
        """A connection to the admin console (simple query protocol only)."""
        import psycopg

        return psycopg.connect(self.admin_url(), autocommit=True, cursor_factory=psycopg.ClientCursor)

    def show(self, what: str, conn=None) -> list[dict]:
        """``SHOW <what>`` on the admin console (on ``conn``, else a connection of its own), as dicts."""
        if conn is None:
            with self.admin() as own:
                return self.show(what, own)
        cursor = conn.execute(f"SHOW {what}")
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def pools(self, database: str, conn=None) -> dict[str, int]:
        """Client and server connections of ``database`` now (all users)."""
        clients = servers = waiting = 0
        for pool in self.show("POOLS", conn):
            if pool["database"] == database:
                clients += pool["cl_active"] + pool["cl_waiting"]
                waiting += pool["cl_waiting"]
                servers += sum(pool[f"sv_{kind}"] for kind in ("active", "idle", "used", "tested", "login"))
        return {"clients": clients, "servers": servers, "waiting": waiting}

    def log_tail(self, lines: int = 5) -> str:
        try:
            with open(os.path.join(self.directory, "pgbouncer.log")) as handle:
                return " | ".join(handle.read().strip().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # safe shutdown: waits for the clients' transactions
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Sampler:
    """The most client and server connections of one database seen at once, polled every ``every`` s."""

    def __init__(self, bouncer: PgBouncer, database: str, every: float = 0.5):
        self.bouncer, self.database, self.every = bouncer, database, every
        self.peak = {"clients": 0, "servers": 0, "waiting": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgbouncer-sampler", daemon=True)

    def _run(self) -> None:
        with self.bouncer.admin() as conn:  # one connection: the sampler stays light beside the fake server
            while not self._stop.wait(self.every):
                for key, value in self.bouncer.pools(self.database, conn).items():
                    self.peak[key] = max(self.peak[key], value)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def arguments_add(parser) -> None:
    parser.add_argument(
        "--pgbouncer",
        action="store_true",
        help="workers and beat reach PostgreSQL through a private PgBouncer in transaction mode "
        "(DATABASE_POOLER=pgbouncer)",
    )
    parser.add_argument("--pool-size", type=int, default=8, help="PgBouncer's server connections (with --pgbouncer)")


class Connections:
    """The most connections to ``database`` PostgreSQL served at once (pg_stat_activity), and the
    pooler's clients when there is one: sampled every ``every`` seconds while the block runs."""

    def __init__(self, server_url: str, database: str, bouncer: PgBouncer | None = None, every: float = 0.5):
        from bench._util import database_url_named

        self.admin_url = database_url_named(server_url, "postgres")
        self.database, self.bouncer, self.every = database, bouncer, every
        self.peak_server = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connections-sampler", daemon=True)
        self._pooler = Sampler(bouncer, database, every) if bouncer else None

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            while not self._stop.wait(self.every):
                query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
                [(count,)] = conn.execute(query, [self.database]).fetchall()
                self.peak_server = max(self.peak_server, count)

    def __enter__(self) -> Connections:
        self._thread.start()
        if self._pooler:
            self._pooler.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._pooler:
            self._pooler.__exit__(*exc)

    def describe(self) -> dict:
        """For a bench's JSON: how the processes reached PostgreSQL and the connections it served."""
        if not self.bouncer:
            return {"via": "direct", "peak_server_connections": self.peak_server}
        return {
            "via": f"pgbouncer {version()} transaction mode, pool_size {self.bouncer.pool_size}",
            "peak_server_connections": self.peak_server,
            "peak_pooler_clients": self._pooler.peak["clients"],
            "peak_pooler_clients_waiting": self._pooler.peak["waiting"],
        }


def version() -> str:
    program = binary()
    if not program:
        return "?"
    first = subprocess.run([program, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return first.split()[-1] if first else "?"


def main() -> int:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    with PgBouncer(sys.argv[1]) as bouncer:
        print(bouncer.url(), flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
