"""/metrics: access control, and every value checked against the database, Redis and the requests made."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db.models import Count
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from audience.models import ImportJob
from campaigns.models import CampaignRun
from config import observe
from config.celery import app as celery_app
from messaging.models import Message, MessageStatus
from tests import twilio_webhooks as tw
from tests.factories import CampaignFactory, ContactFactory, SenderFactory

TOKEN = "metrics-test-token-0123456789"


@pytest.fixture
def metrics_settings(settings, db):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_IPS = ["10.1.0.0/16"]
    settings.METRICS_FLUSH_SECONDS = 0
    settings.TWILIO_AUTH_TOKEN = tw.TOKEN
    settings.PUBLIC_BASE_URL = tw.PUBLIC
    observe.flush()  # counts earlier tests left in this process's buffer go out before the slate is wiped
    client = observe.redis_client()
    for key in client.scan_iter(observe.PREFIX + "*"):
        client.delete(key)
    client.delete(celery_app.conf.task_default_queue)
    yield settings
    client.delete(celery_app.conf.task_default_queue)


def scrape(client) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}}."""
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_refuse_without_credentials_and_with_a_wrong_token(metrics_settings, client):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics")["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 403
    # X-Forwarded-For is a client's word, never an address to trust.
    assert client.get("/metrics", headers={"X-Forwarded-For": "10.1.2.3"}).status_code == 401


def test_metrics_answer_the_token_or_an_allowed_address(metrics_settings, client):
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.200.7").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.2.0.1").status_code == 401
    metrics_settings.METRICS_TOKEN = ""
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 403


def test_metric_values_match_the_database(metrics_settings, client, analyst_api):
    now = timezone.now()
    sms, whatsapp = SenderFactory(name="sms-1"), SenderFactory(name="wa-1", channel="whatsapp")
    contact = ContactFactory()
    plan = [(sms, MessageStatus.DELIVERED, 3), (sms, MessageStatus.FAILED, 2), (whatsapp, MessageStatus.READ, 4)]
    for sender, status, count in plan:
        for _ in range(count):
            Message.objects.create(contact=contact, sender=sender, channel=sender.channel, status=status)
    old = Message.objects.create(contact=contact, sender=sms, channel="sms", status=MessageStatus.DELIVERED)
    Message.objects.filter(pk=old.pk).update(created_at=now - dt.timedelta(days=3))  # outside the 24 h window

    campaign = CampaignFactory(name="Metrics", sender=sms)
    run = CampaignRun.objects.create(
        campaign=campaign, scheduled_for=now, mps=10, total=10, pending=4, held=1, sent=3, skipped=1, failed=1
    )
    ImportJob.objects.create(source="api", file_name="a.csv", status="succeeded", created_count=7, invalid_count=2)
    ImportJob.objects.create(source="api", file_name="b.csv", status="succeeded", created_count=5, updated_count=3)
    for _ in range(3):
        celery_app.send_task("tests.never_run")  # waits in the default queue: no worker here

    assert tw.post_form(client, tw.STATUS_PATH, tw.status_payload(tw.SID, "delivered")).status_code == 200
    assert tw.post_form(client, tw.STATUS_PATH, tw.status_payload(tw.SID, "read")).status_code == 200
    forged = tw.post_form(client, tw.STATUS_PATH, tw.status_payload(tw.SID, "sent"), token="not-the-token")
    assert forged.status_code == 403
    for _ in range(2):
        assert analyst_api.get("/api/v1/monitoring/alerts").status_code == 200

    samples = scrape(client)

    expected_sends = {
        (("sender", row["sender__name"]), ("status", row["status"])): row["n"]
        for row in Message.objects.filter(created_at__gte=now - dt.timedelta(hours=24))
        .values("sender__name", "status")
        .annotate(n=Count("id"))
    }
    assert samples["mp_outbound_messages_24h"] == expected_sends
    assert expected_sends[(("sender", "sms-1"), ("status", "delivered"))] == 3

    webhooks = samples["mp_webhook_requests_total"]
    assert webhooks == {
        (("outcome", "accepted"), ("view", "TwilioStatusView")): 2,
        (("outcome", "refused"), ("view", "TwilioStatusView")): 1,
    }
    status_view = (("view", "TwilioStatusView"),)
    assert samples["mp_webhook_request_duration_seconds_count"][status_view] == 3
    assert samples["mp_webhook_request_duration_seconds_bucket"][(("le", "+Inf"), ("view", "TwilioStatusView"))] == 3
    assert samples["mp_webhook_request_duration_seconds_sum"][status_view] > 0

    api = (("method", "GET"), ("status", "2xx"), ("view", "monitoring-alerts"))
    assert samples["mp_http_request_duration_seconds_count"][api] == 2
    buckets = {
        k: v
        for k, v in samples["mp_http_request_duration_seconds_bucket"].items()
        if ("view", "monitoring-alerts") in k
    }
    assert max(buckets.values()) == 2 and sorted(buckets.values()) == list(sorted(buckets.values()))

    queue = (("queue", celery_app.conf.task_default_queue),)
    assert samples["mp_queue_depth"][queue] == 3
    assert 0 <= samples["mp_queue_oldest_task_age_seconds"][queue] < 60

    labels = (("campaign", str(campaign.pk)), ("run", str(run.pk)))
    for state in ("total", "pending", "held", "sent", "skipped", "failed"):
        assert samples["mp_run_recipients"][(*labels[:1], *labels[1:], ("state", state))] == getattr(run, state)
    assert samples["mp_run_progress_ratio"][labels] == pytest.approx(0.5)

    rows = samples["mp_import_rows_total"]
    assert rows[(("outcome", "created"),)] == 12
    assert rows[(("outcome", "updated"),)] == 3
    assert rows[(("outcome", "invalid"),)] == 2
    assert samples["mp_import_jobs"][(("status", "succeeded"),)] == 2


def test_counters_are_summed_across_processes_through_redis(metrics_settings, client):
    """Two processes' buffers land in the same Redis hash; the scrape shows their sum."""
    metrics_settings.METRICS_FLUSH_SECONDS = 60  # buffered, as in production
    observe.webhook_observe("TwilioStatusView", "accepted", 0.004)
    observe.webhook_observe("TwilioStatusView", "accepted", 0.2)
    assert "mp_webhook_requests_total" not in scrape(client)  # not flushed yet
    observe.flush()
    # Another process flushed its own count to the same hash.
    observe.redis_client().hincrby(observe.PREFIX + "webhook_requests_total", "TwilioStatusView\x1faccepted", 5)
    samples = scrape(client)
    assert samples["mp_webhook_requests_total"][(("outcome", "accepted"), ("view", "TwilioStatusView"))] == 7
    bucket = samples["mp_webhook_request_duration_seconds_bucket"]
    assert bucket[(("le", "0.005"), ("view", "TwilioStatusView"))] == 1
    assert bucket[(("le", "0.25"), ("view", "TwilioStatusView"))] == 2
