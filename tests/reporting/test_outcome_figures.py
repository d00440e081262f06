"""Clicks and conversions in the campaign summary, the runs compared, the results export and the analytics page."""

import csv
import io
from datetime import timedelta

import pytest

from messaging.models import Link
from reporting.counters import counters_sweep
from tests.factories import ContactFactory, ConversionFactory, LinkFactory
from tests.reporting.support import T0, add_recipient, make_campaign, make_run, run_counters_fill

pytestmark = pytest.mark.django_db


@pytest.fixture
def outcomes():
    """Run 1: 4 sent messages at 0.05 USD, 2 clicked (3 and 1 clicks), 1 conversion of 30 EUR; run 2: 1 sent."""
    campaign = make_campaign(goal_event="order_placed")
    run1, run2 = make_run(campaign, at=T0), make_run(campaign, at=T0 + timedelta(days=1))
    recipients = [
        add_recipient(
            run1,
            contact=ContactFactory(phone=f"+25471150000{n}"),
            message_status="delivered",
            sent=T0,
            delivered_after=5,
            price="-0.05",
        )
        for n in range(4)
    ]
    add_recipient(run2, message_status="delivered", sent=T0 + timedelta(days=1), delivered_after=5)
    LinkFactory(message=recipients[0].message, clicks=3, first_clicked_at=T0 + timedelta(minutes=2))
    LinkFactory(message=recipients[0].message, position=1, clicks=0)
    LinkFactory(message=recipients[1].message, clicks=1, first_clicked_at=T0 + timedelta(minutes=9))
    LinkFactory(message=recipients[2].message, clicks=0)
    ConversionFactory(
        campaign=campaign, run=run1, recipient=recipients[0], message=recipients[0].message, value="30", currency="EUR"
    )
    counters_sweep(since=T0)
    run_counters_fill(run1, run2)
    return campaign, run1, run2, recipients


def test_the_summary_counts_clicks_and_conversions_with_revenue_and_cost(analyst_api, outcomes):
    campaign, run1, _run2, _recipients = outcomes
    data = analyst_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/summary", {"run": run1.pk}).json()
    assert data["clicks"] == {"unique": 2, "total": 4, "click_rate": 0.5}
    conversions = data["conversions"]
    assert conversions["count"] == 1 and conversions["conversion_rate"] == 0.25
    assert conversions["revenue"] == [{"currency": "EUR", "amount": "30.0000"}]
    assert conversions["revenue_per_message"] == [{"currency": "EUR", "amount": "7.5000"}]
    assert conversions["cost_per_conversion"] == [{"currency": "USD", "amount": "0.2000"}]
    everything = analyst_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/summary").json()
    assert everything["clicks"] == {"unique": 2, "total": 4, "click_rate": 0.4}
    assert everything["conversions"]["conversion_rate"] == 0.2


def test_a_run_without_outcomes_says_zero_and_no_rate_without_sends(analyst_api):
    campaign = make_campaign()
    run = make_run(campaign)
    data = analyst_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/summary", {"run": run.pk}).json()
    assert data["clicks"] == {"unique": 0, "total": 0, "click_rate": None}
    assert data["conversions"]["count"] == 0 and data["conversions"]["conversion_rate"] is None
    assert data["conversions"]["cost_per_conversion"] == []


def test_the_results_export_has_each_recipients_clicks_and_conversions_and_masks_phones(analyst_api, outcomes):
    campaign, run1, _run2, recipients = outcomes
    response = analyst_api.get(f"/api/v1/reporting/campaigns/{campaign.pk}/export", {"run": run1.pk})
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    by_recipient = {int(row["recipient_id"]): row for row in rows}
    first = by_recipient[recipients[0].pk]
    assert (first["clicks"], first["conversions"], first["conversion_value"]) == ("3", "1", "30.0000")
    assert first["first_clicked_at"].startswith((T0 + timedelta(minutes=2)).isoformat()[:16])
    assert (by_recipient[recipients[3].pk]["clicks"], by_recipient[recipients[3].pk]["conversions"]) == ("0", "0")
    assert all("+25471150000" not in row["phone"] for row in rows)


def test_the_analytics_page_shows_the_outcomes_to_an_analyst(client, analyst_user, outcomes):
    campaign, run1, _run2, _recipients = outcomes
    client.force_login(analyst_user)
    page = client.get(f"/reporting/campaigns/{campaign.pk}/", {"run": run1.pk}).content.decode()
    assert "Clicks and conversions" in page
    assert "Conversion rate</dt><dd>25.0 %" in page
    assert "Click rate</dt><dd>50.0 %" in page
    assert "30.0000 EUR" in page


def test_the_outcome_figures_are_read_only_for_an_analyst(analyst_api, outcomes):
    campaign, *_ = outcomes
    response = analyst_api.post(f"/api/v1/reporting/campaigns/{campaign.pk}/summary", {})
    assert response.status_code in (403, 405)
    assert Link.objects.filter(clicks__gt=0).count() == 2
