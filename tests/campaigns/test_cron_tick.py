"""Which cron tick a beat firing belongs to: one run per tick, even when the firing comes again late."""

import datetime as dt

import pytest
from django.utils import timezone

from audience import services as audience
from campaigns import services
from campaigns.models import CampaignRun
from campaigns.services.schedules import cron_tick
from campaigns.tasks import campaign_fire
from tests.factories import CampaignFactory

UTC = dt.UTC


def at(*args):
    return dt.datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "zone", "now", "tick"),
    [
        # 09:00 in Nairobi is 06:00 UTC: the firing itself, a redelivery 90 minutes on, a worker clock 3 s behind.
        ("0 9 * * *", "Africa/Nairobi", at(2026, 11, 30, 6, 0, 2), at(2026, 11, 30, 6, 0)),
        ("0 9 * * *", "Africa/Nairobi", at(2026, 11, 30, 7, 30), at(2026, 11, 30, 6, 0)),
        ("0 9 * * *", "Africa/Nairobi", at(2026, 11, 30, 5, 59, 57), at(2026, 11, 30, 6, 0)),
        ("0 9 * * *", "Africa/Nairobi", at(2026, 11, 30, 5, 59, 50), at(2026, 11, 29, 6, 0)),
        ("0 9 * * *", "Africa/Nairobi", at(2026, 11, 30, 5, 58), at(2026, 11, 29, 6, 0)),
        ("*/15 * * * *", "UTC", at(2026, 11, 30, 10, 31, 10), at(2026, 11, 30, 10, 30)),
        ("* * * * *", "UTC", at(2026, 11, 30, 10, 31, 10), at(2026, 11, 30, 10, 31)),
        ("* * * * *", "UTC", at(2026, 11, 30, 10, 31, 50), at(2026, 11, 30, 10, 31)),  # late, still its minute
        # Saturday 2026-12-05: the last weekday tick was Friday's.
        ("30 9 * * mon-fri", "UTC", at(2026, 12, 5, 10, 0), at(2026, 12, 4, 9, 30)),
        ("0 8 1 * *", "UTC", at(2026, 12, 20, 8, 0), at(2026, 12, 1, 8, 0)),
    ],
)
def test_cron_tick_is_the_latest_tick_of_the_schedule(cron, zone, now, tick):
    assert cron_tick(cron, zone, now) == tick


def test_cron_tick_across_a_daylight_saving_change_moves_forward():
    # New York's clocks went from 02:00 to 03:00 on 2026-03-08; a daily 08:00 tick stays at 08:00 local.
    assert cron_tick("0 8 * * *", "America/New_York", at(2026, 3, 8, 12, 0, 5)) == at(2026, 3, 8, 12, 0)
    assert cron_tick("0 8 * * *", "America/New_York", at(2026, 3, 7, 13, 0, 5)) == at(2026, 3, 7, 13, 0)


@pytest.mark.django_db
def test_a_firing_redelivered_after_a_worker_died_finds_its_run(monkeypatch):
    audience.contact_create(phone="+254712000001", name="A")
    campaign = CampaignFactory(name="Hourly")
    services.campaign_update(campaign, schedule_type="cron", kind="recurring", cron="0 * * * *")
    services.campaign_schedule(campaign)
    clock = {"now": at(2026, 11, 30, 9, 0, 1)}
    monkeypatch.setattr(timezone, "now", lambda: clock["now"])

    first = campaign_fire(campaign.pk)
    # The worker died after the launch committed, before the ack: the broker gives the task out again.
    clock["now"] = at(2026, 11, 30, 9, 47)
    assert campaign_fire(campaign.pk) == first
    assert CampaignRun.objects.count() == 1
    # The next tick is a run of its own.
    clock["now"] = at(2026, 11, 30, 10, 0, 0, 400_000)
    second = campaign_fire(campaign.pk)
    assert second != first
    assert list(CampaignRun.objects.order_by("pk").values_list("scheduled_for", flat=True)) == [
        at(2026, 11, 30, 9, 0),
        at(2026, 11, 30, 10, 0),
    ]
