"""Helpers for the tests of several nodes: an S3-compatible server, the test database's URL, a worker node.

The S3 server is moto in server mode (``python -m moto.server``), a process of its own on a free
port, reached over HTTP like a MinIO or AWS bucket. A worker node is a ``celery worker`` process
with its own MEDIA_ROOT and TMPDIR, configured only through the environment, like a container.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests.delivery import free_port

S3_KEYS = {"S3_ACCESS_KEY_ID": "node-test-key", "S3_SECRET_ACCESS_KEY": "node-test-secret", "S3_REGION": "us-east-1"}


def wait_for(predicate, timeout: float = 60.0, poll: float = 0.1) -> None:
    """Wait until ``predicate()`` holds (another process got there); AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll)


def database_url() -> str:
    """The test database's URL for another process, over TCP or the embedded server's socket."""
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    socket_dir = (db.get("OPTIONS") or {}).get("host")
    if not db["HOST"] and socket_dir:
        return f"postgres://{auth}@/{db['NAME']}?host={socket_dir}"
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class S3Server:
    """moto's S3 in a process of its own, with one bucket."""

    def __init__(self, bucket: str = "imports"):
        self.bucket = bucket
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a node's environment names: the bucket, its endpoint, the keys, the region."""
        return {"S3_BUCKET": self.bucket, "S3_ENDPOINT_URL": self.endpoint, **S3_KEYS}

    def storages(self) -> dict:
        """STORAGES as config/settings.py builds them from ``env``, for this (test) process."""
        env = {**os.environ, **self.env}
        code = "import json; from django.conf import settings; print(json.dumps(settings.STORAGES['default']))"
        result = subprocess.run(
            [sys.executable, "-c", f"import django; django.setup(); {code}"],
            env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        import json

        return {**settings.STORAGES, "default": json.loads(result.stdout.strip().splitlines()[-1])}

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_KEYS["S3_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_KEYS["S3_SECRET_ACCESS_KEY"],
            region_name=S3_KEYS["S3_REGION"],
        )

    def keys(self) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def start(self) -> S3Server:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client().create_bucket(Bucket=self.bucket)
                return self
            except Exception:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class WorkerNode:
    """A Celery worker on a machine of its own: its own MEDIA_ROOT and TMPDIR, the shared servers."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.media_root = root / "media"
        self.tmp = root / "tmp"
        self.media_root.mkdir(parents=True)
        self.tmp.mkdir(parents=True)
        self.log = root / "worker.log"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "MEDIA_ROOT": str(self.media_root),
            "TMPDIR": str(self.tmp),
            **env,
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerNode:
        command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo"]
        command += ["--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "warning"]
        command += ["-n", f"node-{uuid.uuid4().hex[:8]}@%h"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, env=self.env, cwd=settings.BASE_DIR, stdout=subprocess.DEVNULL, stderr=log
            )
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def files(self) -> list[Path]:
        """Files the node left on its own disk (its MEDIA_ROOT and its temporary directory)."""
        return [path for root in (self.media_root, self.tmp) for path in root.rglob("*") if path.is_file()]
