"""The price table: refreshed from the provider's pricing API (Twilio through the official client against
the fake, or the simulated provider), imported from CSV with every bad row named, read-only for analysts."""

from decimal import Decimal

import pytest
import tablib
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from audience import services as audience
from messaging.models import PriceSource, PriceTable
from messaging.pricing import table
from tests import delivery
from tests.factories import UserFactory

fake = delivery.fake  # the fake Twilio server fixture
pytestmark = pytest.mark.django_db

GOOD_CSV = "country,channel,price,currency\nKE,sms,0.1290,USD\nke,whatsapp,0.0297,usd\n"
BAD_CSV = "country,channel,price,currency\nKE,sms,0.1290,USD\nXX,sms,0.05,USD\nGB,fax,-1,dollars\n"


def _import(text: str, *, dry_run: bool = False):
    dataset = tablib.Dataset().load(text, format="csv")
    return table.PriceTableResource().import_data(dataset, dry_run=dry_run, rollback_on_validation_errors=True)


def test_a_refresh_asks_twilios_pricing_api_and_keeps_the_highest_long_code_price(fake):
    result = table.price_table_refresh(["ke", "GB", "FR"])
    assert result.updated == ["GB sms", "KE sms"] and result.unlisted == ["FR"] and result.failed == {}
    rows = {(r.country, r.channel): (r.price, r.currency, r.source) for r in PriceTable.objects.all()}
    # Kenya lists Safaricom at 0.1290 and Airtel at 0.1187; short codes (0.1500) are not a long code's price.
    assert rows == {
        ("KE", "sms"): (Decimal("0.12900"), "USD", PriceSource.PROVIDER),
        ("GB", "sms"): (Decimal("0.05240"), "USD", PriceSource.PROVIDER),
    }
    assert fake.stats()["pricing_requests"] == {"FR": 1, "GB": 1, "KE": 1}


def test_a_pricing_api_that_cannot_answer_is_said_per_country(fake, settings):
    settings.TWILIO_API_BASE_URL = "http://127.0.0.1:9"  # nothing listens there
    result = table.price_table_refresh(["KE"])
    assert result.updated == [] and list(result.failed) == ["KE"]
    assert not PriceTable.objects.exists()


def test_the_simulated_provider_lists_both_channels(settings):
    settings.MESSAGING_PROVIDER = "simulated"
    result = table.price_table_refresh(["KE"])
    assert sorted(result.updated) == ["KE sms", "KE whatsapp"]
    assert PriceTable.objects.get(country="KE", channel="sms").price == Decimal("0.1290")


def test_a_csv_import_stores_its_rows_normalised():
    result = _import(GOOD_CSV)
    assert not result.has_errors() and not result.has_validation_errors()
    rows = {(r.country, r.channel): (r.price, r.currency, r.source) for r in PriceTable.objects.all()}
    assert rows == {
        ("KE", "sms"): (Decimal("0.12900"), "USD", PriceSource.CSV),
        ("KE", "whatsapp"): (Decimal("0.02970"), "USD", PriceSource.CSV),
    }
    _import("country,channel,price,currency\nKE,sms,0.1400,USD\n")  # the same country and channel: updated
    assert PriceTable.objects.get(country="KE", channel="sms").price == Decimal("0.14000")


def test_a_csv_import_names_each_bad_row_and_field_and_stores_nothing():
    result = _import(BAD_CSV)
    assert result.has_validation_errors()
    errors = {row.number: sorted(row.error_dict) for row in result.invalid_rows}
    assert errors == {2: ["country"], 3: ["channel", "currency", "price"]}
    bad = result.invalid_rows[1].error_dict
    assert bad["price"] == ["'-1' is not a price (a number of at least 0, e.g. 0.0079)"]
    assert bad["currency"] == ["'dollars' is not a currency code (ISO 4217, e.g. USD)"]
    assert not PriceTable.objects.exists()


def test_the_admin_import_shows_the_row_errors(client):
    client.force_login(UserFactory(username="boss", is_superuser=True))
    upload = SimpleUploadedFile("prices.csv", BAD_CSV.encode(), content_type="text/csv")
    response = client.post(
        "/admin/messaging/pricetable/import/", {"import_file": upload, "format": "0", "resource": "0"}
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "is not a country code" in page and "is not a currency code" in page
    assert not PriceTable.objects.exists()


def test_staff_refresh_from_the_admin(client, settings):
    settings.MESSAGING_PROVIDER = "simulated"
    client.force_login(UserFactory(username="boss", is_superuser=True))
    audience.contact_create(phone="+254712000001", name="A")
    audience.contact_create(phone="+447400123456", name="B")
    listing = client.get("/admin/messaging/pricetable/").content.decode()
    assert "Refresh from provider" in listing and "/admin/messaging/pricetable/import/" in listing
    form = client.get("/admin/messaging/pricetable/refresh/")
    assert form.status_code == 200 and 'value="GB KE"' in form.content.decode()  # the contacts' countries
    response = client.post("/admin/messaging/pricetable/refresh/", {"countries": "KE, GB"}, follow=True)
    assert "4 prices refreshed from the provider" in response.content.decode()
    bad = client.post("/admin/messaging/pricetable/refresh/", {"countries": "KE QQ"})
    assert bad.status_code == 200 and "not country codes: QQ" in bad.content.decode()


def test_an_analyst_sees_prices_but_changes_nothing(analyst_user):
    PriceTable.objects.create(
        country="KE", channel="sms", price=Decimal("0.129"), currency="USD", refreshed_at="2026-01-01T00:00Z"
    )
    client = Client()
    client.force_login(analyst_user)
    listing = client.get("/admin/messaging/pricetable/")
    assert listing.status_code == 200 and "0.12900" in listing.content.decode()
    assert (
        "Refresh from provider" not in listing.content.decode() and "refresh_selected" not in listing.content.decode()
    )
    assert client.get("/admin/messaging/pricetable/refresh/").status_code == 403
    assert client.get("/admin/messaging/pricetable/import/").status_code == 403
    assert client.get("/admin/messaging/pricetable/add/").status_code == 403


def test_the_fake_pricing_api_wants_the_account_credentials(fake):
    import requests

    url = f"{fake.base_url}/v1/Messaging/Countries/KE"
    assert requests.get(url, timeout=5).status_code == 401
    answer = requests.get(url, auth=(delivery.SID, delivery.TOKEN), timeout=5)
    assert answer.status_code == 200 and answer.json()["iso_country"] == "KE"
    assert requests.get(url.replace("KE", "FR"), auth=(delivery.SID, delivery.TOKEN), timeout=5).status_code == 404
