"""Test then send the winner: the test share first, the winner after the wait (beat or staff), once."""

import datetime as dt

import pytest
from django.utils import timezone

from audience.models import Contact
from campaigns import services, tasks
from campaigns.models import WINNER_ACTION, Campaign, CampaignAction, CampaignKind, Recipient, RecipientState
from campaigns.services import arms, dispatch, winner
from messaging.models import Direction, Message
from reporting import counters
from tests.factories import CampaignFactory, ContactFactory, MessageTemplateFactory, VariantFactory
from tests.reporting.support import make_message

pytestmark = pytest.mark.django_db
WAIT = dt.timedelta(hours=2)


def winner_campaign(**fields):
    Contact.objects.bulk_create(ContactFactory.build_batch(400))
    fields = {"winner_test_share": 25, "winner_wait": WAIT, "winner_metric": "replies", **fields}
    campaign = CampaignFactory(**fields)
    a = VariantFactory(campaign=campaign, label="A", template=MessageTemplateFactory(body="A {{ name }}"))
    b = VariantFactory(campaign=campaign, label="B", template=MessageTemplateFactory(body="B {{ name }}"))
    return campaign, a, b


def send_test_and_reply(run, replying_arm):
    """The test's messages go out; a third of ``replying_arm``'s recipients reply."""
    dispatch.recipients_claim(run, 1000)
    sent_at = timezone.now() - dt.timedelta(hours=1)
    tested = list(Recipient.objects.filter(run=run, arm__isnull=False).exclude(message=None))
    for recipient in tested:
        Message.objects.filter(pk=recipient.message_id).update(
            status="delivered", provider_sid=f"SMwin{recipient.message_id:029d}", sent_at=sent_at, delivered_at=sent_at
        )
    repliers = [r for r in tested if r.arm == replying_arm][::3]
    for recipient in repliers:
        reply = make_message(contact=recipient.contact, direction=Direction.INBOUND, status="received")
        Message.objects.filter(pk=reply.pk).update(created_at=sent_at + dt.timedelta(minutes=10))
    counters.counters_sync([r.message_id for r in tested], contact_ids=[r.contact_id for r in repliers])


def test_the_test_goes_to_its_share_and_the_rest_waits_held_without_an_arm():
    campaign, a, b = winner_campaign()
    run = services.campaign_launch(campaign)
    tested = Recipient.objects.filter(run=run, arm__in=[a.pk, b.pk])
    waiting = Recipient.objects.filter(run=run, arm__isnull=True)
    assert abs(tested.count() - 100) < 30  # 25 % of 400
    assert set(tested.values_list("state", flat=True)) == {RecipientState.PENDING}
    assert set(waiting.values_list("state", "release_at")) == {(RecipientState.HELD, None)}
    run.refresh_from_db()
    assert (run.pending, run.held) == (tested.count(), waiting.count())
    assert run.arm_sizes[arms.WAITING] == waiting.count()
    # Sending the test leaves the waiting recipients alone: the run stays open for them.
    dispatch.recipients_claim(run, 1000)
    assert not Message.objects.filter(recipient__run=run, recipient__arm__isnull=True).exists()


def test_beat_picks_the_leader_after_the_wait_and_sends_it_to_the_rest_once():
    campaign, a, b = winner_campaign()
    run = services.campaign_launch(campaign)
    send_test_and_reply(run, replying_arm=b.pk)
    assert winner.winners_due(timezone.now() + WAIT - dt.timedelta(minutes=5)) == []
    assert winner.winners_due(timezone.now() + WAIT) == [campaign.pk]
    waiting = Recipient.objects.filter(run=run, arm__isnull=True).count()

    assert winner.winner_pick_auto(campaign.pk) is True
    assert winner.winner_pick_auto(campaign.pk) is False  # twice: nothing more happens

    campaign.refresh_from_db()
    assert campaign.winner_variant_id == b.pk
    rollout = Recipient.objects.filter(run=run, rollout=True)
    assert rollout.count() == waiting and set(rollout.values_list("arm", "state").distinct()) == {
        (b.pk, RecipientState.PENDING)
    }
    assert not Recipient.objects.filter(run=run, arm__isnull=True).exists()
    action = CampaignAction.objects.get(campaign=campaign, action=WINNER_ACTION)
    assert (action.detail["label"], action.detail["how"], action.detail["released"]) == ("B", "auto", waiting)
    assert action.detail["rates"]["B"]["replies"] > action.detail["rates"]["A"]["replies"] == 0
    run.refresh_from_db()
    assert run.held == 0 and run.pending == waiting
    assert run.arm_sizes[f"rollout:{b.pk}"] == waiting and run.arm_sizes[arms.WAITING] == 0
    # The rest of the audience is sent the winner's template.
    dispatch.recipients_claim(run, 1000)
    templates = set(Message.objects.filter(recipient__in=rollout).values_list("template_id", flat=True))
    assert templates == {b.template_id}


def test_the_beat_task_is_safe_to_run_twice():
    campaign, a, b = winner_campaign()
    run = services.campaign_launch(campaign)
    send_test_and_reply(run, replying_arm=a.pk)
    Campaign.objects.filter(pk=campaign.pk).update(winner_wait=dt.timedelta(seconds=0))
    assert tasks.winners_pick() == 1
    assert tasks.winners_pick() == 0
    assert CampaignAction.objects.filter(campaign=campaign, action=WINNER_ACTION).count() == 1
    assert Campaign.objects.get(pk=campaign.pk).winner_variant_id == a.pk


def test_staff_pick_by_hand_and_a_later_automatic_pick_changes_nothing(staff_user):
    campaign, a, b = winner_campaign(winner_pick="manual")
    run = services.campaign_launch(campaign)
    send_test_and_reply(run, replying_arm=b.pk)
    assert winner.winners_due(timezone.now() + WAIT) == []  # manual: beat leaves it to staff
    assert winner.winner_pick(campaign.pk, a.pk, actor=staff_user) is True
    assert winner.winner_pick(campaign.pk, b.pk, actor=staff_user) is False
    assert winner.winner_pick_auto(campaign.pk) is False
    action = CampaignAction.objects.get(campaign=campaign, action=WINNER_ACTION)
    assert (action.actor, action.detail["how"], action.detail["label"]) == (staff_user.username, "manual", "A")
    assert set(Recipient.objects.filter(run=run, rollout=True).values_list("arm", flat=True)) == {a.pk}


def test_a_variant_of_another_campaign_cannot_win():
    campaign, a, b = winner_campaign()
    services.campaign_launch(campaign)
    other = VariantFactory()
    with pytest.raises(winner.WinnerError, match="is not one of campaign"):
        winner.winner_pick(campaign.pk, other.pk)


def test_winner_settings_are_checked_at_launch():
    campaign, *_ = winner_campaign(winner_wait=None, winner_metric="", kind=CampaignKind.TRIGGERED, trigger_event="x")
    with pytest.raises(services.CampaignError) as caught:
        services.campaign_launch(campaign)
    errors = caught.value.message_dict
    assert "one-off campaigns only" in errors["winner_test_share"][0]
    assert errors["winner_wait"] and errors["winner_metric"]


def test_a_wait_past_the_validity_is_refused():
    campaign, *_ = winner_campaign(validity=dt.timedelta(hours=1))
    with pytest.raises(services.CampaignError) as caught:
        services.campaign_launch(campaign)
    assert "before the validity period" in caught.value.message_dict["winner_wait"][0]


def test_the_winner_reaches_contacts_inside_their_quiet_hours_held_until_those_end():
    campaign, a, b = winner_campaign()
    run = services.campaign_launch(campaign)
    now = timezone.now().replace(microsecond=0)
    local = now.astimezone(dt.UTC)
    quiet_start = (local - dt.timedelta(hours=1)).time().replace(second=0)
    quiet_end = (local + dt.timedelta(hours=2)).time().replace(second=0)
    Campaign.objects.filter(pk=campaign.pk).update(quiet_start=quiet_start, quiet_end=quiet_end)
    waiting = list(Recipient.objects.filter(run=run, arm__isnull=True).values_list("contact_id", flat=True))
    Contact.objects.filter(pk__in=waiting[::2]).update(timezone="UTC")  # the rest: the default zone (UTC too)

    assert winner.winner_pick(campaign.pk, a.pk, now=now) is True
    rollout = Recipient.objects.filter(run=run, rollout=True)
    assert rollout.count() == len(waiting)
    expected_release = now.replace(hour=quiet_end.hour, minute=quiet_end.minute, second=0)
    if expected_release <= now:
        expected_release += dt.timedelta(days=1)
    assert set(rollout.values_list("arm", "state", "release_at").distinct()) == {
        (a.pk, RecipientState.HELD, expected_release)
    }
