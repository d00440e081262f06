"""`make run`: migrate, seed the demo, then run web, worker and beat together.

Run it under ``python -m config.embedded`` (the Makefile does) so PostgreSQL and
Redis are up. Ctrl-C (or SIGTERM) stops all three processes; the embedded
wrapper then stops the servers. Data persists in ./var/ for the next run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

PYTHON = sys.executable
HOST = os.environ.get("RUN_HOST", "127.0.0.1")
PORT = os.environ.get("RUN_PORT", "8000")

PROCESSES = {
    "web": [
        PYTHON,
        "-m",
        "gunicorn",
        "config.wsgi:application",
        "--config",
        "python:config.gunicorn_conf",
        "--bind",
        f"{HOST}:{PORT}",
        "--workers",
        "2",
        "--threads",
        "4",
        "--access-logfile",
        "-",
        "--graceful-timeout",
        "5",
    ],
    "worker": [PYTHON, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO", "--concurrency", "2"],
    "beat": [PYTHON, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"],
    # Evaluates the alert rules outside Celery too, so "no worker" and "beat stopped" can fire.
    "alerts": [PYTHON, "manage.py", "alerts_evaluate", "--every", "30", "--wait", "60"],
}


def manage(*args: str) -> None:
    subprocess.run([PYTHON, "manage.py", *args], check=True)


def main() -> int:
    manage("migrate", "--noinput")
    manage("setup_demo")
    children = {name: subprocess.Popen(cmd) for name, cmd in PROCESSES.items()}
    print(f"\n  Platform running on http://{HOST}:{PORT}/admin/  (Ctrl-C stops everything)\n", flush=True)

    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                print(f"{name} exited with code {child.returncode}; stopping the platform", file=sys.stderr)
                stopping, exit_code = True, 1
        time.sleep(0.5)
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + 15
    for child in children.values():
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
