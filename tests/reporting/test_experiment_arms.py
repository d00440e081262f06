"""GET /api/v1/reporting/campaigns/{id}/arms (and its CSV): each arm's figures against a hand count."""

import csv
import datetime as dt
import io
import uuid
from decimal import Decimal

import pytest
from django.utils import timezone

from audience.models import Contact
from campaigns import services
from campaigns.models import Recipient
from campaigns.services import arms, dispatch
from messaging.models import Direction, Link, LinkClick, Message
from reporting import counters
from reporting.models import ArmCounter
from tests.factories import CampaignFactory, ContactFactory, ConversionFactory, MessageTemplateFactory, VariantFactory
from tests.reporting.support import make_message

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment():
    """300 contacts, arms A and B and a 20 % control group; every A message delivered, half of B's;
    20 of A's recipients reply (one of them twice), 2 of B's: A's lead over the control group is clear
    whatever sizes the arms are drawn at."""
    Contact.objects.bulk_create(ContactFactory.build_batch(300))
    campaign = CampaignFactory(control_share=20)
    a = VariantFactory(campaign=campaign, label="A", template=MessageTemplateFactory(body="A {{ name }}"))
    b = VariantFactory(campaign=campaign, label="=B", template=MessageTemplateFactory(body="B {{ name }}"))
    run = services.campaign_launch(campaign)
    dispatch.recipients_claim(run, 1000)
    sent_at = timezone.now() - dt.timedelta(hours=2)
    recipients = {arm: list(Recipient.objects.filter(run=run, arm=arm).order_by("id")) for arm in (a.pk, b.pk)}
    delivered = recipients[a.pk] + recipients[b.pk][: len(recipients[b.pk]) // 2]
    for recipient in recipients[a.pk] + recipients[b.pk]:
        done = recipient in delivered
        Message.objects.filter(pk=recipient.message_id).update(
            status="delivered" if done else "sent",
            provider_sid=f"SMarm{recipient.message_id:029d}",
            sent_at=sent_at,
            delivered_at=sent_at + dt.timedelta(seconds=5) if done else None,
        )
    repliers = recipients[a.pk][:20] + recipients[b.pk][:2]
    for recipient in repliers + recipients[a.pk][:1]:
        make_message(contact=recipient.contact, direction=Direction.INBOUND, status="received", created_at=sent_at)
        Message.objects.filter(contact=recipient.contact, direction=Direction.INBOUND).update(
            created_at=sent_at + dt.timedelta(minutes=30)
        )
    counters.counters_sync(
        [r.message_id for r in recipients[a.pk] + recipients[b.pk]], contact_ids=[r.contact_id for r in repliers]
    )
    return campaign, run, a, b, recipients


def test_arms_figures_match_a_hand_count(analyst_api, experiment):
    campaign, run, a, b, recipients = experiment
    response = analyst_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/arms")
    assert response.status_code == 200, response.content
    data = response.json()
    by_label = {arm["label"]: arm for arm in data["arms"]}
    assert list(by_label) == ["A", "=B", "Control"]
    control_size = Recipient.objects.filter(run=run, arm=arms.CONTROL_ARM, reason="control").count()
    n_a, n_b = len(recipients[a.pk]), len(recipients[b.pk])
    assert n_a + n_b + control_size == 300
    assert (by_label["A"]["recipients"], by_label["=B"]["recipients"], by_label["Control"]["recipients"]) == (
        n_a,
        n_b,
        control_size,
    )
    assert (by_label["A"]["sent"], by_label["A"]["delivered"], by_label["A"]["replies"]) == (n_a, n_a, 20)
    assert by_label["A"]["replies_total"] == 21
    assert (by_label["=B"]["sent"], by_label["=B"]["delivered"], by_label["=B"]["replies"]) == (n_b, n_b // 2, 2)
    assert by_label["Control"]["sent"] == 0 and by_label["Control"]["control"] is True
    assert by_label["A"]["rates"]["replies"] == pytest.approx(20 / n_a)
    assert by_label["A"]["rates"]["clicks"] == 0  # no tracked link was clicked
    # A against control on replies: 20/n_a vs 0/control, Newcombe's interval, said in words.
    versus = by_label["A"]["versus_control"]["replies"]
    assert versus["estimate"] == pytest.approx(20 / n_a)
    assert versus["low"] > 0 and versus["significant"] is True
    assert versus["sentence"].startswith("A's reply rate is ") and "higher than Control's" in versus["sentence"]
    # Best arm on replies is A; B is compared with it, A with the runner-up B.
    assert by_label["=B"]["versus_best"]["replies"]["best"] == "A"
    assert by_label["=B"]["versus_best"]["replies"]["estimate"] == pytest.approx(2 / n_b - 20 / n_a)
    assert by_label["A"]["versus_best"]["replies"]["versus"] == "=B"
    assert by_label["A"]["versus_control"]["clicks"]["significant"] is False


def test_arm_counters_equal_a_recount(experiment):
    _campaign, run, *_ = experiment
    fields = ("arm", "rollout", "sent", "delivered", "read", "failed", "repliers", "replies", "opt_outs_72h")
    kept = sorted(ArmCounter.objects.filter(run_id=run.pk).values_list(*fields))
    counters.counters_recount([run.pk])
    assert sorted(ArmCounter.objects.filter(run_id=run.pk).values_list(*fields)) == kept
    assert len(kept) == 2


def test_a_campaign_without_variants_reports_no_arms(analyst_api):
    campaign = CampaignFactory()
    data = analyst_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/arms").json()
    assert (data["experiment"], data["arms"], data["winner"]) == (False, [], None)


def test_a_run_of_another_campaign_is_a_400_naming_the_parameter(analyst_api, experiment):
    campaign, *_ = experiment
    response = analyst_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/arms?run=999999")
    assert response.status_code == 400 and "run" in response.json()
    assert analyst_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/arms?run=abc").status_code == 400
    assert analyst_api.get("/api/v1/reporting/campaigns/999999/arms").status_code == 404


def test_arms_csv_escapes_formulas_and_carries_the_differences(analyst_api, experiment):
    campaign, *_ = experiment
    response = analyst_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/arms/export")
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    assert [row["label"] for row in rows] == ["A", "'=B", "Control"]
    assert rows[0]["replies_vs_control_sentence"].startswith("A's reply rate is")
    assert float(rows[0]["replies_vs_control_diff"]) > 0


def test_the_recipients_csv_names_each_recipients_arm_and_masks_phones_for_analysts(analyst_api, experiment):
    campaign, run, a, _b, recipients = experiment
    response = analyst_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/export")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    first_a = recipients[a.pk][0]
    row = next(row for row in rows if row["recipient_id"] == str(first_a.pk))
    assert row["arm"] == "A"
    assert row["phone"] != first_a.contact.phone and row["phone"].endswith(first_a.contact.phone[-2:])
    assert {row["arm"] for row in rows if row["skip_reason"] == "control"} == {"Control"}


def test_the_analytics_page_draws_a_chart_per_arm_and_says_the_differences(client, analyst_user, experiment):
    campaign, run, a, b, recipients = experiment
    client.force_login(analyst_user)
    page = client.get(f"/reporting/campaigns/{campaign.pk}/").content.decode()
    assert 'data-testid="experiment"' in page
    for index in range(3):  # A, =B and the control group
        assert f'id="arm-{index}-chart"' in page and f'id="arm-{index}-data"' in page
    assert "A&#x27;s reply rate is" in page and "higher than Control&#x27;s" in page
    assert recipients[a.pk][0].contact.phone not in page
    plain = CampaignFactory()
    assert 'data-testid="experiment"' not in client.get(f"/reporting/campaigns/{plain.pk}/").content.decode()


def test_figures_from_another_source_become_columns_and_comparisons(analyst_api, experiment):
    """Clicks, conversions, revenue and cost come from their own counters through a registered source."""
    from reporting import arms as reporting_arms

    campaign, run, a, b, recipients = experiment
    n_a = len(recipients[a.pk])
    control = (arms.CONTROL_ARM, False)

    def source(run_ids):
        assert run_ids == [run.pk]
        return {
            (a.pk, False): {"clicks": 30, "conversions": 12, "revenue": 120, "revenue_sq": 12 * 100, "cost": 1},
            (b.pk, False): {"clicks": 10, "conversions": 4, "revenue": 40, "revenue_sq": 4 * 100, "cost": 1},
            control: {"clicks": 0, "conversions": 2, "revenue": 20, "revenue_sq": 2 * 100, "cost": 0},
        }

    reporting_arms.arm_figure_source_add(source)
    try:
        data = analyst_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/arms").json()
    finally:
        reporting_arms.ARM_FIGURE_SOURCES.remove(source)
    by_label = {arm["label"]: arm for arm in data["arms"]}
    assert (by_label["A"]["clicks"], by_label["A"]["conversions"], by_label["A"]["revenue"]) == (30, 12, "120.00000")
    assert by_label["A"]["rates"]["conversions"] == pytest.approx(12 / n_a)
    converted = by_label["A"]["versus_control"]["conversions"]
    control_size = by_label["Control"]["recipients"]
    assert converted["estimate"] == pytest.approx(12 / n_a - 2 / control_size)
    assert converted["sentence"].startswith("A's conversion rate is")
    revenue = by_label["A"]["versus_control"]["revenue"]
    assert revenue["estimate"] == pytest.approx(120 / n_a - 20 / control_size)
    assert revenue["low"] < revenue["estimate"] < revenue["high"]
    assert "revenue_sq" not in by_label["A"]


def test_clicks_conversions_revenue_and_cost_per_arm_come_from_the_outcome_tables(analyst_api, experiment):
    campaign, run, a, b, recipients = experiment
    clickers, converters = recipients[a.pk][:6], recipients[a.pk][:3] + recipients[b.pk][:1]
    expires = timezone.now() + dt.timedelta(days=30)
    for recipient in clickers:  # two links each, one clicked twice: a recipient counts once
        clicked = Link.objects.create(
            message_id=recipient.message_id, position=0, url="https://shop.example/a", expires_at=expires, clicks=2
        )
        Link.objects.create(
            message_id=recipient.message_id, position=1, url="https://shop.example/b", expires_at=expires
        )
        for _ in range(2):
            LinkClick.objects.create(link=clicked, key=uuid.uuid4(), clicked_at=timezone.now())
    for recipient in converters:
        ConversionFactory(run=run, campaign=campaign, recipient=recipient, message_id=recipient.message_id, value=10)
    for recipient in recipients[b.pk]:
        Message.objects.filter(pk=recipient.message_id).update(price=Decimal("-0.0500"), price_unit="USD")
    counters.counters_sync([recipient.message_id for recipient in recipients[b.pk]])  # as a fetched price does
    by_label = {
        arm["label"]: arm for arm in analyst_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/arms").json()["arms"]
    }
    assert (by_label["A"]["clicks"], by_label["=B"]["clicks"], by_label["Control"]["clicks"]) == (6, 0, 0)
    assert (by_label["A"]["conversions"], by_label["=B"]["conversions"]) == (3, 1)
    assert Decimal(by_label["A"]["revenue"]) == 30 and Decimal(by_label["=B"]["revenue"]) == 10
    assert Decimal(by_label["=B"]["cost"]) == Decimal("0.05") * len(recipients[b.pk])
    assert by_label["A"]["rates"]["clicks"] == pytest.approx(6 / len(recipients[a.pk]))
    assert by_label["A"]["versus_control"]["clicks"]["estimate"] == pytest.approx(6 / len(recipients[a.pk]))
