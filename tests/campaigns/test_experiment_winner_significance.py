"""An automatic pick sends a significant leader; a lead that may be chance is sent anyway, waited on
up to the longest wait, or replaced by the first variant, as the campaign says; the audit, the
admin and the analytics page say in words whether the pick was significant."""

import datetime as dt

import pytest
from django.utils import timezone

from campaigns import services
from campaigns.models import WINNER_ACTION, Campaign, CampaignAction, Recipient
from campaigns.services import dispatch, winner
from messaging.models import Direction, Message
from reporting import counters
from tests.campaigns.test_experiment_winner import WAIT, winner_campaign
from tests.factories import MessageTemplateFactory, SenderFactory, UserFactory
from tests.reporting.support import make_message

pytestmark = pytest.mark.django_db


def send_test_with_replies(run, replies: dict[int, float]) -> None:
    """The test's messages go out; the share ``replies[arm]`` of each arm's recipients (rounded down) reply."""
    dispatch.recipients_claim(run, 1000)
    sent_at = timezone.now() - dt.timedelta(hours=1)
    tested = list(Recipient.objects.filter(run=run, arm__isnull=False).exclude(message=None).order_by("pk"))
    Message.objects.filter(pk__in=[r.message_id for r in tested]).update(
        status="delivered", sent_at=sent_at, delivered_at=sent_at
    )
    by_arm = {arm: [t for t in tested if t.arm == arm] for arm in replies}
    repliers = [r for arm, share in replies.items() for r in by_arm[arm][: int(share * len(by_arm[arm]))]]
    for recipient in repliers:
        reply = make_message(contact=recipient.contact, direction=Direction.INBOUND, status="received")
        Message.objects.filter(pk=reply.pk).update(created_at=sent_at + dt.timedelta(minutes=10))
    counters.counters_sync([r.message_id for r in tested], contact_ids=[r.contact_id for r in repliers])


def launched(replies, **fields):
    campaign, a, b = winner_campaign(**fields)
    run = services.campaign_launch(campaign)
    send_test_with_replies(run, {arm: count for arm, count in zip((a.pk, b.pk), replies, strict=True)})
    return campaign, a, b


def pick_audit(campaign) -> dict:
    return CampaignAction.objects.get(campaign=campaign, action=WINNER_ACTION).detail


def test_a_significant_lead_is_picked_and_said_to_be_significant():
    campaign, a, b = launched((0, 0.4))
    assert winner.winner_pick_auto(campaign.pk, now=timezone.now() + WAIT) is True
    assert Campaign.objects.get(pk=campaign.pk).winner_variant_id == b.pk
    detail = pick_audit(campaign)
    assert detail["significant"] is True
    assert detail["why"].startswith("B leads on reply rate") and "significantly at 95 % confidence" in detail["why"]
    assert "not significantly" not in detail["why"]


def test_by_default_a_lead_that_may_be_chance_is_sent_anyway_and_the_audit_says_so():
    campaign, a, b = launched((0.10, 0.14))
    assert winner.winner_pick_auto(campaign.pk, now=timezone.now() + WAIT) is True
    assert Campaign.objects.get(pk=campaign.pk).winner_variant_id == b.pk
    detail = pick_audit(campaign)
    assert detail["significant"] is False
    assert "but not significantly at 95 % confidence" in detail["why"] and "sent anyway" in detail["why"]


def test_keep_waiting_picks_nothing_until_the_longest_wait_then_sends_the_leader():
    longest = WAIT * 3
    campaign, a, b = launched((0.10, 0.14), winner_undecided="wait", winner_max_wait=longest)
    assert winner.winner_pick_auto(campaign.pk, now=timezone.now() + WAIT) is False
    assert not CampaignAction.objects.filter(campaign=campaign, action=WINNER_ACTION).exists()
    assert Recipient.objects.filter(run__campaign=campaign, arm__isnull=True).exists()  # the rest still waits
    assert winner.winner_pick_auto(campaign.pk, now=timezone.now() + longest) is True
    assert Campaign.objects.get(pk=campaign.pk).winner_variant_id == b.pk
    detail = pick_audit(campaign)
    assert detail["significant"] is False and "After the longest wait" in detail["why"]


def test_keep_waiting_still_picks_a_significant_lead_at_the_wait():
    campaign, a, b = launched((0.4, 0), winner_undecided="wait", winner_max_wait=WAIT * 3)
    assert winner.winner_pick_auto(campaign.pk, now=timezone.now() + WAIT) is True
    assert Campaign.objects.get(pk=campaign.pk).winner_variant_id == a.pk
    assert pick_audit(campaign)["significant"] is True


def test_send_the_first_variant_when_no_lead_is_significant():
    campaign, a, b = launched((0.10, 0.14), winner_undecided="first")
    assert winner.winner_pick_auto(campaign.pk, now=timezone.now() + WAIT) is True
    assert Campaign.objects.get(pk=campaign.pk).winner_variant_id == a.pk  # B led, by chance
    detail = pick_audit(campaign)
    assert (detail["label"], detail["significant"]) == ("A", False)
    assert "The first variant, A, is sent" in detail["why"]


def test_a_pick_by_hand_of_an_arm_that_does_not_lead_says_so(client):
    campaign, a, b = launched((0, 0.4), winner_pick="manual")
    staff = UserFactory(username="boss", is_superuser=True)
    assert winner.winner_pick(campaign.pk, a.pk, actor=staff) is True
    detail = pick_audit(campaign)
    assert (detail["how"], detail["significant"]) == ("manual", False)
    assert detail["why"].startswith("A does not lead on reply rate")
    client.force_login(staff)
    page = client.get(f"/admin/campaigns/campaign/{campaign.pk}/winner/").content.decode()
    assert "A does not lead on reply rate" in page


def test_the_analytics_page_and_api_say_whether_the_pick_was_significant(client, analyst_user, analyst_api):
    campaign, a, b = launched((0.10, 0.14))
    winner.winner_pick_auto(campaign.pk, now=timezone.now() + WAIT)
    figures = analyst_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/arms").json()
    assert figures["winner"]["significant"] is False
    assert "not significantly at 95 % confidence" in figures["winner"]["sentence"]
    client.force_login(analyst_user)
    page = client.get(f"/reporting/campaigns/{campaign.pk}/").content.decode()
    assert figures["winner"]["sentence"].replace("'", "&#x27;") in page


@pytest.mark.parametrize("longest", [None, "01:00:00"])
def test_keep_waiting_needs_a_longest_wait_past_the_wait(staff_api, longest):
    payload = {
        "name": "Wait",
        "template": MessageTemplateFactory().pk,
        "sender": SenderFactory().pk,
        "winner_test_share": 20,
        "winner_wait": "02:00:00",
        "winner_metric": "replies",
        "winner_undecided": "wait",
        "winner_max_wait": longest,
    }
    response = staff_api.post("/api/v1/campaigns/", payload, format="json")
    assert response.status_code == 400 and "winner_max_wait" in response.json(), response.json()
    payload["winner_max_wait"] = "06:00:00"
    assert staff_api.post("/api/v1/campaigns/", payload, format="json").status_code == 201
