"""GET /api/v1/monitoring/inbound and /api/v1/monitoring/dashboard."""

import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from audience.models import ConsentStatus
from config.celery import app as celery_app
from config.privacy import phone_mask
from messaging.models import Direction, Message, ProviderCallback
from reporting.counters import counters_sweep
from reporting.monitoring import WORKERS_CACHE_KEY, inbound_kind, inbound_list, queue_depths
from tests.factories import ContactFactory
from tests.reporting.support import add_recipient, make_campaign, make_message, make_run

pytestmark = pytest.mark.django_db

INBOUND = "/api/v1/monitoring/inbound"
DASHBOARD = "/api/v1/monitoring/dashboard"


def inbound(body: str, *, contact=None, at=None, num_media: int = 0, channel: str = "sms") -> Message:
    return make_message(
        contact=contact,
        direction=Direction.INBOUND,
        status="received",
        body=body,
        num_media=num_media,
        channel=channel,
        created_at=at or timezone.now(),
    )


@pytest.fixture
def stream():
    contact = ContactFactory(phone="+447700900123")
    return [
        inbound("STOP", contact=contact),
        inbound(" start! "),
        inbound("help"),
        inbound("Thanks, see you at 5"),
        inbound("", num_media=1, channel="whatsapp"),
        inbound("stop please"),
    ]


def test_each_message_is_classified_by_the_keyword_table(analyst_api, stream):
    body = analyst_api.get(INBOUND).json()
    kinds = [(row["body"], row["kind"], row["keyword"]) for row in body["results"]]
    assert kinds == [
        ("STOP", "opt_out", "STOP"),
        (" start! ", "opt_in", "START"),
        ("help", "help", "HELP"),
        ("Thanks, see you at 5", "reply", ""),
        ("", "media", ""),
        ("stop please", "reply", ""),
    ]
    assert body["next_since"] == stream[-1].pk


@pytest.mark.parametrize("kind", ["opt_out", "opt_in", "help", "reply", "media"])
def test_the_kind_filter_agrees_with_the_classification(kind, stream):
    found = inbound_list(kind=kind)
    assert found
    assert all(inbound_kind(m.body, m.num_media)[0] == kind for m in found)
    assert {m.pk for m in found} == {m.pk for m in stream if inbound_kind(m.body, m.num_media)[0] == kind}


def test_the_kind_filter_normalises_text_as_the_keyword_parser_does():
    texts = ["ARRÊT", "opt out", "OPT\u2011OUT", "ＳＴＯＰ", "\u200bSTOP", "Stop?", "Please STOP now", "arre\u0302t"]
    messages = [inbound(text) for text in texts]
    opted_out = {m.pk for m in inbound_list(kind="opt_out")}
    assert opted_out == {m.pk for m in messages if inbound_kind(m.body, m.num_media)[0] == "opt_out"}
    assert len(opted_out) == len(texts) - 1


def test_since_cursor_polls_only_what_came_after(analyst_api, stream):
    first = analyst_api.get(INBOUND, {"limit": 2}).json()
    assert [row["id"] for row in first["results"]] == [stream[-2].pk, stream[-1].pk]  # the latest two
    cursor = stream[2].pk
    after = analyst_api.get(INBOUND, {"since": cursor}).json()
    assert [row["id"] for row in after["results"]] == [m.pk for m in stream[3:]]
    again = analyst_api.get(INBOUND, {"since": after["next_since"]}).json()
    assert again == {"results": [], "next_since": after["next_since"]}
    newer = inbound("YES")
    assert [row["id"] for row in analyst_api.get(INBOUND, {"since": after["next_since"]}).json()["results"]] == [
        newer.pk
    ]


def test_since_as_a_timestamp_and_filters(analyst_api, stream):
    old = inbound("old news", at=timezone.now() - timedelta(days=2))
    since = (timezone.now() - timedelta(days=1)).isoformat()
    ids = [row["id"] for row in analyst_api.get(INBOUND, {"since": since}).json()["results"]]
    assert old.pk not in ids and set(ids) == {m.pk for m in stream}
    assert [r["id"] for r in analyst_api.get(INBOUND, {"channel": "whatsapp"}).json()["results"]] == [stream[4].pk]
    contact = stream[0].contact_id
    assert [r["id"] for r in analyst_api.get(INBOUND, {"contact": contact}).json()["results"]] == [stream[0].pk]
    assert [r["id"] for r in analyst_api.get(INBOUND, {"kind": "opt_out"}).json()["results"]] == [stream[0].pk]


@pytest.mark.parametrize(
    "params, name",
    [
        ({"since": "last tuesday"}, "since"),
        ({"kind": "spam"}, "kind"),
        ({"limit": "0"}, "limit"),
        ({"channel": "x"}, "channel"),
    ],
)
def test_bad_inbound_parameters_are_named(analyst_api, params, name):
    response = analyst_api.get(INBOUND, params)
    assert response.status_code == 400 and name in response.json()


def test_inbound_phones_masked_for_analysts_full_for_staff(analyst_api, staff_api, stream):
    masked = analyst_api.get(INBOUND, {"kind": "opt_out"}).json()["results"][0]["from_address"]
    assert masked == phone_mask("+447700900123") == "+4477******23"
    assert staff_api.get(INBOUND, {"kind": "opt_out"}).json()["results"][0]["from_address"] == "+447700900123"


def test_phone_mask_keeps_the_channel_prefix():
    assert phone_mask("whatsapp:+14155550123") == "whatsapp:+1415*****23"
    assert phone_mask("") == ""
    assert phone_mask("12345") == "*****"


def test_monitoring_permissions(anon_api, analyst_api):
    for url in (INBOUND, DASHBOARD):
        assert anon_api.get(url).status_code == 401
        assert analyst_api.post(url, {}).status_code == 403


def test_dashboard_reports_real_rows(analyst_api, django_capture_on_commit_callbacks):
    cache.delete(WORKERS_CACHE_KEY)
    ContactFactory.create_batch(3)
    ContactFactory(consent_status=ConsentStatus.OPTED_OUT)
    now = timezone.now()
    campaign = make_campaign()
    run = make_run(campaign, at=now - timedelta(minutes=30), status="running", total=4, sent=2, failed=1, pending=1)
    for minutes, status in ((0.5, "sent"), (3, "delivered"), (30, "delivered")):
        add_recipient(run, message_status=status, queued_at=now - timedelta(minutes=minutes), sent=now)
    add_recipient(run, state="failed", message_status="failed", failed_at=now - timedelta(minutes=2))
    make_message(direction=Direction.INBOUND, status="received", created_at=now)
    # Rows written here without the services' signals are counted by the sweep, as in production.
    counters_sweep(since=now - timedelta(hours=1))
    ProviderCallback.objects.create(kind="status", provider_sid="SMx", status="sent", payload={})
    every, _ = IntervalSchedule.objects.get_or_create(every=30, period="seconds")
    tick = now - timedelta(seconds=20)
    PeriodicTask.objects.create(name="test tick", task="x", interval=every, last_run_at=tick)

    response = analyst_api.get(DASHBOARD)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["database"]["ok"] and body["redis"]["ok"] and body["broker"]["ok"]
    assert "celery" in body["broker"]["depths"]
    assert body["celery"]["ok"] and body["celery"]["alive"] is bool(body["celery"]["workers"])
    assert 0 <= body["celery"]["age_seconds"] < 60 and 0 <= body["broker"]["age_seconds"] < 60
    assert body["counters_swept_at"] is not None
    assert 15 <= body["beat"]["seconds_ago"] < 120
    assert body["totals"]["opted_out_contacts"] == 1
    assert body["totals"]["outbound_24h"] == 4 and body["totals"]["inbound_24h"] == 1
    rates = body["send_rate"]
    assert (rates["1m"]["sent"], rates["5m"]["sent"], rates["60m"]["sent"]) == (1, 2, 3)
    assert rates["5m"]["failed"] == 1 and rates["5m"]["error_rate"] == round(1 / 3, 4)
    assert rates["60m"]["per_minute"] == round(3 / 60, 2)
    assert body["webhooks"]["status_callbacks_5m"] == 1
    assert body["webhooks"]["seconds_since_last_event"] < 60
    [active] = body["active_runs"]
    assert active["id"] == run.pk and active["progress"] == 0.75
    assert active["messages_by_status"] == {"sent": 1, "delivered": 2, "failed": 1}


def test_dashboard_totals_count_contacts_exactly(analyst_api):
    ContactFactory.create_batch(5)
    ContactFactory.create_batch(2, consent_status=ConsentStatus.OPTED_OUT)
    totals = analyst_api.get(DASHBOARD).json()["totals"]
    assert totals["contacts"] == 7 and totals["opted_out_contacts"] == 2


def test_queue_depth_is_read_from_the_broker():
    # A queue no worker consumes, so the count cannot change under the test.
    name = f"reporting-test-{uuid.uuid4().hex[:8]}"
    assert queue_depths([name]) == {name: 0}
    with celery_app.connection_for_write() as conn:
        client = conn.default_channel.client  # the broker's own Redis connection
        client.lpush(name, b"one", b"two")
        try:
            assert queue_depths([name]) == {name: 2}
        finally:
            client.delete(name)


@pytest.mark.slow
def test_dashboard_finds_a_live_worker_by_ping(analyst_api):
    name = f"reporting-{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-Q", name]
    command += ["--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "warning", "-n", f"{name}@%h"]
    env = {**os.environ, "REDIS_URL": settings.REDIS_URL}
    process = subprocess.Popen(command, env=env, cwd=settings.BASE_DIR, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        workers: list[str] = []
        while time.monotonic() < deadline and not any(w.startswith(name) for w in workers):
            cache.delete(WORKERS_CACHE_KEY)
            workers = analyst_api.get(DASHBOARD).json()["celery"]["workers"]
        assert any(w.startswith(f"{name}@") for w in workers)
        assert analyst_api.get(DASHBOARD).json()["celery"]["alive"] is True
    finally:
        process.terminate()
        process.wait(timeout=20)
        cache.delete(WORKERS_CACHE_KEY)


def test_dashboard_without_runs_or_events(analyst_api):
    body = analyst_api.get(DASHBOARD).json()
    assert body["active_runs"] == []
    assert body["webhooks"]["last_event_at"] is None
    assert body["send_rate"]["1m"]["error_rate"] is None


def test_a_dependency_that_is_down_shows_its_reason_to_staff_only(analyst_api, staff_api, settings, client):
    """Redis unreachable (a closed port): analysts learn it is down, not the address Staff need to fix it."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    analyst = analyst_api.get(DASHBOARD).json()["redis"]
    staff = staff_api.get(DASHBOARD).json()["redis"]
    assert analyst == {"ok": False, "error": "down"}
    assert staff["ok"] is False and str(port) in staff["error"]
