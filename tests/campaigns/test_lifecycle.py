"""Campaign status machine, audit list, PeriodicTask sync and one run per tick."""

import datetime as dt
import json
import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from audience import services as audience
from campaigns import services
from campaigns.models import Campaign, CampaignRun, Recipient
from campaigns.services.lifecycle import TRANSITIONS
from campaigns.tasks import campaign_fire
from tests.factories import CampaignFactory, MessageTemplateFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def campaign():
    audience.contact_create(phone="+254712000001", name="A")
    audience.contact_create(phone="+254712000002", name="B")
    return CampaignFactory(name="Weekly")


def later(minutes=10):
    return timezone.now() + dt.timedelta(minutes=minutes)


def test_scheduling_once_creates_a_clocked_one_off_task(campaign):
    send_at = later()
    services.campaign_update(campaign, schedule_type="once", send_at=send_at)
    services.campaign_schedule(campaign, actor="staff")
    campaign.refresh_from_db()
    assert campaign.status == "scheduled"
    task = PeriodicTask.objects.get(name=f"campaign:{campaign.pk}")
    assert task.one_off and task.enabled and task.clocked.clocked_time == send_at
    assert task.task == "campaigns.tasks.campaign_fire"
    assert json.loads(task.kwargs) == {"campaign_id": campaign.pk}
    assert campaign.periodic_task == task
    assert [a.action for a in campaign.actions.all()][:2] == ["schedule", "edit"]


def test_editing_a_scheduled_campaign_moves_its_task(campaign):
    services.campaign_update(campaign, schedule_type="once", send_at=later(10))
    services.campaign_schedule(campaign)
    new_time = later(60)
    services.campaign_update(campaign, send_at=new_time)
    task = PeriodicTask.objects.get(name=f"campaign:{campaign.pk}")
    assert task.clocked.clocked_time == new_time
    services.campaign_update(
        campaign, schedule_type="cron", kind="recurring", cron="30 9 * * mon-fri", cron_timezone="Africa/Nairobi"
    )
    task.refresh_from_db()
    assert task.clocked is None and not task.one_off
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("30", "9", "mon-fri")
    assert str(task.crontab.timezone) == "Africa/Nairobi"
    assert PeriodicTask.objects.filter(name__startswith="campaign:").count() == 1


def test_pause_disables_and_cancel_removes_the_task(campaign):
    services.campaign_update(campaign, schedule_type="cron", kind="recurring", cron="0 9 * * *")
    services.campaign_schedule(campaign)
    services.campaign_pause(campaign)
    assert PeriodicTask.objects.get(name=f"campaign:{campaign.pk}").enabled is False
    services.campaign_resume(campaign)
    assert PeriodicTask.objects.get(name=f"campaign:{campaign.pk}").enabled is True
    services.campaign_cancel(campaign, actor="staff")
    assert not PeriodicTask.objects.filter(name=f"campaign:{campaign.pk}").exists()
    campaign.refresh_from_db()
    assert campaign.status == "cancelled" and campaign.periodic_task is None


def test_schedule_refuses_bad_settings_naming_the_field(campaign):
    for fields, field in [
        ({"schedule_type": "once", "send_at": None}, "send_at"),
        ({"schedule_type": "cron", "kind": "recurring", "cron": "every day"}, "cron"),
        (
            {"schedule_type": "cron", "kind": "recurring", "cron": "0 9 * * *", "cron_timezone": "Mars/Base"},
            "cron_timezone",
        ),
        ({"mps": 500}, "mps"),
    ]:
        with pytest.raises(services.CampaignError) as raised:
            services.campaign_update(campaign, **fields)
        assert field in raised.value.message_dict
    campaign.refresh_from_db()
    assert campaign.status == "draft" and campaign.mps is None


def test_a_template_for_another_channel_is_refused(campaign):
    with pytest.raises(services.CampaignError, match="whatsapp template cannot go through a sms sender"):
        services.campaign_update(campaign, template=MessageTemplateFactory(channel="whatsapp"))


ALL = ["draft", "scheduled", "running", "paused", "completed", "cancelled", "failed"]


@pytest.mark.parametrize("start", ALL)
@pytest.mark.parametrize("end", ALL)
def test_every_transition_is_allowed_or_refused_as_the_table_says(campaign, start, end):
    from campaigns.services.lifecycle import _transition

    Campaign.objects.filter(pk=campaign.pk).update(status=start)
    if end in TRANSITIONS[start]:
        _transition(campaign, end, action="test", actor="staff")
        assert Campaign.objects.get(pk=campaign.pk).status == end
        action = campaign.actions.get()
        assert (action.from_status, action.to_status, action.actor) == (start, end, "staff")
    else:
        with pytest.raises(services.CampaignError, match="cannot test"):
            _transition(campaign, end, action="test")
        assert Campaign.objects.get(pk=campaign.pk).status == start
        assert not campaign.actions.exists()


def test_finished_campaigns_cannot_be_launched_or_edited(campaign):
    services.campaign_cancel(campaign)
    with pytest.raises(services.CampaignError, match="cannot launch a cancelled campaign"):
        services.campaign_launch(campaign)
    with pytest.raises(services.CampaignError, match="cannot be edited"):
        services.campaign_update(campaign, name="x")


def test_launch_is_once_per_tick(campaign):
    tick = timezone.now().replace(second=0, microsecond=0)
    first = services.campaign_launch(campaign, scheduled_for=tick)
    again = services.campaign_launch(campaign, scheduled_for=tick)
    assert first.pk == again.pk
    assert CampaignRun.objects.count() == 1 and Recipient.objects.count() == 2
    campaign.refresh_from_db()
    assert campaign.status == "running"


def test_a_second_launch_now_lands_on_the_open_run_whatever_the_second(campaign):
    # CI once saw a double click straddle a second boundary: the second click got a 400.
    first = services.campaign_launch(campaign, now=timezone.now().replace(microsecond=999_000))
    again = services.campaign_launch(campaign, now=first.scheduled_for + dt.timedelta(seconds=1.5))
    assert again.pk == first.pk
    services.campaign_pause(campaign)
    with pytest.raises(services.CampaignError, match="cannot launch a paused campaign"):
        services.campaign_launch(campaign, now=first.scheduled_for + dt.timedelta(seconds=3))
    assert CampaignRun.objects.count() == 1 and Recipient.objects.count() == 2


def test_a_one_off_campaign_cannot_run_twice(campaign):
    services.campaign_launch(campaign)
    with pytest.raises(services.CampaignError, match="already running"):
        services.campaign_launch(campaign, scheduled_for=later())


def test_pause_and_cancel_mark_the_run_and_its_waiting_recipients(campaign):
    run = services.campaign_launch(campaign)
    services.campaign_pause(campaign)
    run.refresh_from_db()
    assert run.status == "paused"
    services.campaign_resume(campaign)
    run.refresh_from_db()
    assert run.status == "running"
    services.campaign_cancel(campaign)
    run.refresh_from_db()
    assert (run.status, run.pending, run.skipped) == ("cancelled", 0, 2)
    assert set(Recipient.objects.values_list("state", "reason")) == {("skipped", "cancelled")}


def test_a_scheduled_run_with_nobody_to_send_completes_at_once(campaign):
    from audience.models import Contact

    Contact.objects.update(consent_status="opted_out")
    run = services.campaign_launch(campaign, scheduled_for=timezone.now().replace(microsecond=0))
    run.refresh_from_db()
    campaign.refresh_from_db()
    assert run.status == "completed" and run.total == 0
    assert campaign.status == "completed"


def test_launching_now_to_nobody_is_refused_with_the_reasons_and_leaves_nothing(campaign):
    from audience.models import Contact

    Contact.objects.update(consent_status="opted_out")
    with pytest.raises(ValidationError) as caught:
        services.campaign_launch(campaign)
    assert caught.value.messages == [
        "nobody would receive this campaign now: the audience is empty "
        "(no contact matches the segment, the topic and consent)"
    ]
    campaign.refresh_from_db()
    assert campaign.status == "draft" and not campaign.runs.exists()


def test_launching_now_when_every_contact_lacks_a_variable_names_the_reason(campaign):
    services.campaign_update(campaign, template=MessageTemplateFactory(body="Your code: {{ attributes.offer_code }}"))
    with pytest.raises(ValidationError) as caught:
        services.campaign_launch(campaign)
    assert "excluded: missing variable" in caught.value.messages[0]
    assert not campaign.runs.exists()


def test_beat_firing_a_recurring_campaign_twice_in_a_minute_makes_one_run(campaign, monkeypatch):
    services.campaign_update(campaign, schedule_type="cron", kind="recurring", cron="* * * * *")
    services.campaign_schedule(campaign)
    # Two beats firing one tick, a moment apart. The clock is pinned: on a real one the two firings
    # can straddle whichever instant the code starts the next tick at (a minute, or a leeway before it).
    tick = timezone.now().replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    clock = {"now": tick + dt.timedelta(milliseconds=200)}
    monkeypatch.setattr(timezone, "now", lambda: clock["now"])
    first = campaign_fire(campaign.pk)
    clock["now"] = tick + dt.timedelta(seconds=3)
    second = campaign_fire(campaign.pk)
    assert first == second and CampaignRun.objects.count() == 1
    assert CampaignRun.objects.get().scheduled_for == tick


def test_beat_firing_a_cancelled_campaign_does_nothing(campaign):
    services.campaign_cancel(campaign)
    assert campaign_fire(campaign.pk) is None
    assert campaign_fire(999_999) is None
    assert not CampaignRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_launches_make_one_run(campaign):
    tick = timezone.now().replace(second=0, microsecond=0)
    barrier = threading.Barrier(2)
    results, errors = [], []

    def launch():
        try:
            barrier.wait()
            results.append(services.campaign_launch(Campaign.objects.get(pk=campaign.pk), scheduled_for=tick).pk)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=launch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 2 and results[0] == results[1]
    assert CampaignRun.objects.count() == 1
    assert Recipient.objects.count() == 2


def test_a_fired_one_off_schedule_removes_its_task(campaign):
    services.campaign_update(campaign, schedule_type="once", send_at=later())
    services.campaign_schedule(campaign)
    assert PeriodicTask.objects.filter(name=f"campaign:{campaign.pk}").exists()
    run_id = campaign_fire(campaign.pk)
    run = CampaignRun.objects.get(pk=run_id)
    campaign.refresh_from_db()
    assert run.scheduled_for == campaign.send_at and campaign.status == "running"
    assert campaign.periodic_task is None
    assert not PeriodicTask.objects.filter(name=f"campaign:{campaign.pk}").exists()


def _recipient_rows_planned() -> float:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = 'campaigns_recipient'::regclass")
        return cursor.fetchone()[0]


def test_a_big_snapshot_refreshes_the_planner_statistics_at_commit(
    campaign, monkeypatch, django_capture_on_commit_callbacks
):
    from campaigns.services import snapshot

    with django_capture_on_commit_callbacks() as small:
        services.campaign_launch(campaign)
    assert snapshot.recipients_analyze not in small  # two recipients: autovacuum's business

    monkeypatch.setattr(snapshot, "ANALYZE_AFTER", 2)
    services.campaign_pause(campaign)
    services.campaign_cancel(campaign)
    other = Campaign.objects.create(name="Big", template=campaign.template, sender=campaign.sender)
    with django_capture_on_commit_callbacks() as big:
        services.campaign_launch(other)
    assert snapshot.recipients_analyze in big
    snapshot.recipients_analyze()
    assert _recipient_rows_planned() == Recipient.objects.count() == 4
