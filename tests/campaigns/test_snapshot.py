"""The recipient snapshot: consent, caps, quiet hours, missing variables, window and expiry in one statement."""

import datetime as dt

import pytest
from django.utils import timezone

from audience import services as audience
from audience.models import ConsentStatus
from campaigns import services
from campaigns.models import Campaign, CampaignRun, Recipient
from messaging.services import inflight
from tests.factories import MessageTemplateFactory, SenderFactory, TopicFactory

pytestmark = pytest.mark.django_db
UTC = dt.UTC
NOW = dt.datetime(2026, 11, 27, 20, 0, tzinfo=UTC)  # 23:00 Nairobi, 15:00 New York, 20:00 London


def contact(phone, **fields):
    return audience.contact_create(phone=phone, actor="test", **fields)


def campaign(**fields):
    fields.setdefault("template", MessageTemplateFactory())
    fields.setdefault("sender", SenderFactory())
    fields.setdefault("name", f"campaign-{Campaign.objects.count()}")
    return Campaign.objects.create(**fields)


def states(run):
    return {r.contact.phone: (r.state, r.reason) for r in Recipient.objects.filter(run=run).select_related("contact")}


def test_without_a_segment_every_opted_in_contact_is_pending():
    a = contact("+254712000001", name="A")
    contact("+254712000002", name="B", consent_status=ConsentStatus.OPTED_OUT)
    run = services.campaign_launch(campaign(), now=NOW)
    assert states(run) == {a.phone: ("pending", "")}
    assert (run.total, run.pending, run.skipped) == (1, 1, 0)


def test_a_segment_snapshot_skips_opted_out_members_with_the_reason():
    segment = services.segment_create(name="adults", query="age >= 18")
    contact("+254712000001", name="A", attributes={"age": 30})
    contact("+254712000002", name="B", attributes={"age": 40}, consent_status=ConsentStatus.OPTED_OUT)
    contact("+254712000003", name="C", attributes={"age": 12})
    run = services.campaign_launch(campaign(segment=segment), now=NOW)
    assert states(run) == {"+254712000001": ("pending", ""), "+254712000002": ("skipped", "opted_out")}
    assert run.skipped_by_reason == {"opted_out": 1}


def test_topic_limits_the_audience():
    vip = TopicFactory(name="vip")
    contact("+254712000001", name="A", topics=[vip])
    contact("+254712000002", name="B")
    run = services.campaign_launch(campaign(topic=vip), now=NOW)
    assert list(states(run)) == ["+254712000001"]


def test_missing_variable_is_skipped_with_its_name_and_fallbacks_count():
    template = MessageTemplateFactory(
        body="Hi {{ name }} from {{ attributes.city }}, {{ attributes.code }}", fallbacks={"attributes.code": "WELCOME"}
    )
    contact("+254712000001", name="A", attributes={"city": "Nairobi"})
    contact("+254712000002", name="B", attributes={"city": "  "})
    contact("+254712000003", name="", attributes={"city": "Lagos"})
    run = services.campaign_launch(campaign(template=template), now=NOW)
    rows = {r.contact.phone: (r.state, r.detail) for r in Recipient.objects.filter(run=run).select_related("contact")}
    assert rows == {
        "+254712000001": ("pending", ""),
        "+254712000002": ("skipped", "missing variable attributes.city"),
        "+254712000003": ("skipped", "missing variable name"),
    }


def test_quiet_hours_hold_until_the_contacts_local_morning(settings):
    settings.DEFAULT_TIMEZONE = "UTC"  # the zone-less contact below; not the environment's
    contact("+254712000001", name="Nairobi", timezone="Africa/Nairobi")  # 23:00 local
    contact("+12125550101", name="New York", timezone="America/New_York")  # 15:00 local
    contact("+447400000001", name="Default")  # DEFAULT_TIMEZONE (UTC): 20:00
    c = campaign(quiet_start=dt.time(21), quiet_end=dt.time(8))
    run = services.campaign_launch(c, now=NOW)
    held = Recipient.objects.get(run=run, contact__phone="+254712000001")
    assert (held.state, held.release_at) == ("held", dt.datetime(2026, 11, 28, 5, 0, tzinfo=UTC))
    assert states(run)["+12125550101"] == ("pending", "")
    assert states(run)["+447400000001"] == ("pending", "")
    assert (run.pending, run.held) == (2, 1)


def test_default_timezone_applies_to_contacts_without_one(settings):
    settings.DEFAULT_TIMEZONE = "Africa/Nairobi"
    contact("+447400000001", name="No zone")
    run = services.campaign_launch(campaign(quiet_start=dt.time(21), quiet_end=dt.time(8)), now=NOW)
    assert states(run) == {"+447400000001": ("held", "")}


def test_held_past_the_validity_period_is_skipped_as_expired():
    contact("+254712000001", name="Nairobi", timezone="Africa/Nairobi")  # held for 9 hours
    contact("+12125550101", name="New York", timezone="America/New_York")
    c = campaign(quiet_start=dt.time(21), quiet_end=dt.time(8), validity=dt.timedelta(hours=4))
    run = services.campaign_launch(c, now=NOW)
    assert states(run) == {"+254712000001": ("skipped", "expired"), "+12125550101": ("pending", "")}


def test_frequency_cap_counts_messages_across_campaigns():
    # The cap counts recipients by their created_at, which the database stamps with its own clock:
    # the launches use that clock too (a fixed NOW would make the result depend on today's date).
    now = timezone.now()
    contact("+254712000001", name="A")
    contact("+254712000002", name="B")
    first = services.campaign_launch(campaign(), now=now)
    Recipient.objects.filter(run=first, contact__phone="+254712000002").update(state="skipped", reason="opted_out")
    capped = campaign(frequency_cap=1, frequency_window=dt.timedelta(days=1))
    run = services.campaign_launch(capped, now=now + dt.timedelta(hours=1))
    assert states(run) == {"+254712000001": ("skipped", "capped"), "+254712000002": ("pending", "")}
    # Outside the window the earlier message no longer counts.
    later = campaign(frequency_cap=1, frequency_window=dt.timedelta(minutes=30))
    run = services.campaign_launch(later, now=now + dt.timedelta(hours=2))
    assert states(run)["+254712000001"] == ("pending", "")


def test_free_form_whatsapp_goes_only_to_contacts_inside_the_24h_window():
    sender = SenderFactory(channel="whatsapp", kind="whatsapp", from_address="whatsapp:+447400000009")
    template = MessageTemplateFactory(channel="whatsapp", body="Hi {{ name }}")
    recent = contact("+254712000001", name="A", channel="whatsapp")
    contact("+254712000002", name="B", channel="whatsapp")
    audience.contact_touch_inbound(recent, at=NOW - dt.timedelta(hours=2))
    run = services.campaign_launch(campaign(sender=sender, template=template), now=NOW)
    assert states(run) == {"+254712000001": ("pending", ""), "+254712000002": ("skipped", "outside_window")}


def test_approved_whatsapp_templates_are_not_bound_by_the_window():
    sender = SenderFactory(channel="whatsapp", kind="whatsapp", from_address="whatsapp:+447400000009")
    template = MessageTemplateFactory(
        channel="whatsapp", body="Hi {{ name }}", content_sid="HX" + "a" * 32, content_variables={"1": "name"}
    )
    contact("+254712000002", name="B", channel="whatsapp")
    run = services.campaign_launch(campaign(sender=sender, template=template), now=NOW)
    assert states(run) == {"+254712000002": ("pending", "")}


def test_dry_run_equals_the_launch_at_the_same_moment():
    segment = services.segment_create(name="adults", query="age >= 18")
    template = MessageTemplateFactory(body="Hi {{ name }} in {{ attributes.city }}")
    for index, (zone, consent, city) in enumerate(
        [
            ("Africa/Nairobi", "opted_in", "Nairobi"),
            ("America/New_York", "opted_in", "NYC"),
            ("Europe/London", "opted_out", "London"),
            ("", "opted_in", ""),
            ("Asia/Kolkata", "opted_in", "Pune"),
        ]
    ):
        contact(
            f"+25471200000{index}",
            name=f"C{index}",
            timezone=zone,
            consent_status=consent,
            attributes={"age": 20 + index, "city": city},
        )
    c = campaign(segment=segment, template=template, quiet_start=dt.time(21), quiet_end=dt.time(8), mps=1)
    inflight.latency_forget(c.sender_id)  # no latency measured for this sender: the setting's guess
    dry = services.campaign_dry_run(c, now=NOW)
    assert CampaignRun.objects.count() == 0 and Recipient.objects.count() == 0
    run = services.campaign_launch(c, now=NOW)
    assert dry["audience"] == run.total == 5
    assert (dry["pending"], dry["held"]) == (run.pending, run.held) == (1, 2)
    assert dry["excluded"] == run.skipped_by_reason == {"opted_out": 1, "missing_variable": 1}
    # Three at 1 MPS leave in three pacing windows (two waits of 1.03 s), then the provider's last
    # answer (its p99 guessed at 4 x 0.5 s) after the launch's own start-up (0.3 s) and the snapshot.
    assert 4.3 <= dry["estimated_seconds"] <= 4.6
    assert dry["held_until"] == "2026-11-28T05:00:00+00:00"
    assert len(dry["samples"]) == 3
    assert all(sample["text"].startswith("Hi C") for sample in dry["samples"])


def test_deleting_a_contact_removes_its_recipient_rows():
    # Recipient.contact has no database FK (it would lock every snapshotted contact): Django cascades.
    a = contact("+254712000001", name="A")
    contact("+254712000002", name="B")
    run = services.campaign_launch(campaign(), now=NOW)
    audience.contact_delete(a)
    assert list(Recipient.objects.filter(run=run).values_list("contact__phone", flat=True)) == ["+254712000002"]
