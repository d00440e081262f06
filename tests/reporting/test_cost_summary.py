"""The campaign summary sets the estimate each run kept at launch against what Twilio charged (prices
fetched after the final status), per currency; analysts read it in the API and the analytics page."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from campaigns import services as campaigns
from campaigns.services import cost
from messaging.models import Message, PriceTable
from messaging.pricing import fetch
from messaging.services.status import status_callback_record
from reporting import selectors, summary_scanned
from reporting.counters import counters_sync
from tests import delivery
from tests.delivery import campaign_with_audience, drain
from tests.messaging.test_price_fetch import _pace

fake = delivery.fake  # the fake Twilio server fixture
pytestmark = pytest.mark.django_db

PHONES = delivery.PHONES[:2]  # Kenya: 0.1290 USD a segment at the fake


@pytest.fixture
def sent(fake, settings):
    """A campaign launched, estimated, sent to the fake and delivered there; prices not fetched yet."""
    settings.PRICE_FETCH_DELAY_SECONDS = 0
    PriceTable.objects.create(
        country="KE", channel="sms", price=Decimal("0.1300"), currency="USD", refreshed_at=timezone.now()
    )
    campaign = campaign_with_audience(phones=PHONES)
    run = campaigns.campaign_launch(campaign)
    cost.run_cost_estimate(run.pk)
    drain(run)
    for message in Message.objects.filter(provider_sid__isnull=False):
        fake.settle(message.provider_sid, "delivered")
        status_callback_record(provider_sid=message.provider_sid, status="delivered", payload={})
    Message.objects.update(updated_at=timezone.now() - timedelta(minutes=5))
    counters_sync(Message.objects.values_list("pk", flat=True))  # as the callbacks' signals would, after commit
    return campaign


def _compared(campaign) -> dict:
    return selectors.campaign_summary(campaign)["cost_against_estimate"]


def test_the_summary_shows_the_estimate_until_prices_come_then_both(sent):
    before = _compared(sent)
    assert before["currencies"] == [
        {"currency": "USD", "estimated": "0.26000", "estimated_messages": 2, "actual": None, "priced_messages": 0}
    ]
    assert (before["runs_estimated"], before["messages_awaiting_price"]) == (1, 2)

    assert fetch.message_prices_fetch(pace=_pace()[0]) == {"priced": 2}
    after = _compared(sent)
    assert after["currencies"] == [
        {"currency": "USD", "estimated": "0.26000", "estimated_messages": 2, "actual": "0.25800", "priced_messages": 2}
    ]
    assert after["messages_awaiting_price"] == 0
    scanned = summary_scanned.campaign_summary_scanned(sent)
    assert scanned["cost_against_estimate"] == after  # the kept counters moved with the fetched prices


def test_an_analyst_reads_estimated_against_actual_in_the_api_and_page(sent, analyst_api, analyst_user, client):
    fetch.message_prices_fetch(pace=_pace()[0])
    response = analyst_api.get(f"/api/v1/reporting/campaigns/{sent.pk}/summary/")
    assert response.status_code == 200
    compared = response.json()["cost_against_estimate"]
    assert compared["currencies"][0]["estimated"] == "0.26000" and compared["currencies"][0]["actual"] == "0.25800"
    assert analyst_api.post(f"/api/v1/campaigns/{sent.pk}/dry-run/").status_code == 403  # estimates are Staff's
    client.force_login(analyst_user)
    page = client.get(f"/reporting/campaigns/{sent.pk}/").content.decode()
    assert '<span class="cost-row">0.2580 / 0.2600 USD</span>' in page
    assert "0 messages await a price" in page


def test_currencies_are_never_added_together(sent):
    Message.objects.filter(to_address=PHONES[1]).update(price=Decimal("0.1"), price_unit="EUR")
    counters_sync(Message.objects.values_list("pk", flat=True))
    compared = _compared(sent)
    by_currency = {row["currency"]: (row["estimated"], row["actual"]) for row in compared["currencies"]}
    assert by_currency == {"EUR": (None, "0.10000"), "USD": ("0.26000", None)}


def test_a_message_left_sent_counts_in_the_actual_cost_once_priced(sent, settings):
    settings.PRICE_FETCH_SENT_AFTER_SECONDS = 3600
    left = Message.objects.get(to_address=PHONES[1])
    Message.objects.filter(pk=left.pk).update(status="sent")  # its delivery receipt never came
    counters_sync([left.pk])
    assert fetch.message_prices_fetch(pace=_pace()[0]) == {"priced": 1}
    early = _compared(sent)
    assert (early["currencies"][0]["actual"], early["messages_awaiting_price"]) == ("0.12900", 1)

    Message.objects.filter(pk=left.pk).update(updated_at=timezone.now() - timedelta(hours=2))
    assert fetch.message_prices_fetch(pace=_pace()[0]) == {"priced": 1}
    after = _compared(sent)
    assert (after["currencies"][0]["actual"], after["messages_awaiting_price"]) == ("0.25800", 0)
    assert summary_scanned.campaign_summary_scanned(sent)["cost_against_estimate"] == after
