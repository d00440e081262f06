"""The price table estimates read: one price per destination country and channel, with its currency.

Filled three ways, one service each: refreshed from the provider's pricing API
(``price_table_refresh``: Twilio's Pricing API lists SMS only; the simulated provider lists both
channels), imported from CSV (``PriceTableResource``, through django-import-export, every bad
row named with its field), or entered by hand in the admin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone
from import_export import resources

from audience.models import Channel
from audience.phones import phone_country
from messaging.models import PriceSource, PriceTable
from messaging.providers import ProviderError, get_provider

logger = logging.getLogger(__name__)

MAX_COUNTRIES = 300  # more than there are: a refresh never loops on a runaway list


@dataclass
class RefreshResult:
    updated: list[str] = field(default_factory=list)  # "KE sms", ...
    unlisted: list[str] = field(default_factory=list)  # countries the provider has no price for
    failed: dict[str, str] = field(default_factory=dict)  # country -> why it could not be asked


def price_set(*, country: str, channel: str, price: Decimal, currency: str, source: str) -> PriceTable:
    row, _ = PriceTable.objects.update_or_create(
        country=country.upper(),
        channel=channel,
        defaults={"price": price, "currency": currency.upper(), "source": source, "refreshed_at": timezone.now()},
    )
    return row


def price_table_refresh(countries: list[str]) -> RefreshResult:
    """Ask the provider for each country's prices and store them; countries it cannot price are said."""
    provider = get_provider(settings.MESSAGING_PROVIDER)
    result = RefreshResult()
    for country in sorted({code.strip().upper() for code in countries if code.strip()})[:MAX_COUNTRIES]:
        try:
            listed = provider.prices_for_country(country)
        except ProviderError as exc:
            result.failed[country] = f"{exc.code} {exc.message}".strip()[:200]
            continue
        if not listed:
            result.unlisted.append(country)
        for item in listed:
            price_set(
                country=item.country,
                channel=item.channel,
                price=item.price,
                currency=item.currency,
                source=PriceSource.PROVIDER,
            )
            result.updated.append(f"{item.country} {item.channel}")
    logger.info(
        "price table refreshed: %d prices, %d countries unlisted, %d failed",
        len(result.updated),
        len(result.unlisted),
        len(result.failed),
    )
    return result


def audience_countries() -> list[str]:
    """The countries of the contacts' numbers: one number per leading digits (area code for +1) is looked at."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT ON (left(phone, 5)) phone FROM audience_contact ORDER BY left(phone, 5)")
        samples = [row[0] for row in cursor.fetchall()]
    return sorted({country for phone in samples if (country := phone_country(phone))})


def price_lookup(channel: str) -> dict[str, tuple[Decimal, str]]:
    """country -> (price, currency) for a channel."""
    rows = PriceTable.objects.filter(channel=channel).values_list("country", "price", "currency")
    return {country: (price, currency) for country, price, currency in rows}


# --- CSV import ------------------------------------------------------------------------------


class PriceTableResource(resources.ModelResource):
    """country,channel,price,currency rows; a row that is wrong is refused naming its field."""

    class Meta:
        model = PriceTable
        import_id_fields = ("country", "channel")
        fields = ("country", "channel", "price", "currency")
        skip_unchanged = False
        clean_model_instances = False

    def before_import_row(self, row, **kwargs):
        errors: dict[str, str] = {}
        country = str(row.get("country") or "").strip().upper()
        if country not in phonenumbers.SUPPORTED_REGIONS:
            errors["country"] = f"{row.get('country')!r} is not a country code (ISO 3166, two letters, e.g. KE)"
        channel = str(row.get("channel") or "").strip().lower()
        if channel not in Channel.values:
            errors["channel"] = f"{row.get('channel')!r} is not a channel: {' or '.join(Channel.values)}"
        try:
            price = Decimal(str(row.get("price") or "").strip())
            if not price.is_finite() or price < 0 or price >= Decimal("100000"):
                raise InvalidOperation
        except InvalidOperation:
            errors["price"] = f"{row.get('price')!r} is not a price (a number of at least 0, e.g. 0.0079)"
            price = None
        currency = str(row.get("currency") or "").strip().upper()
        if not (len(currency) == 3 and currency.isalpha() and currency.isascii()):
            errors["currency"] = f"{row.get('currency')!r} is not a currency code (ISO 4217, e.g. USD)"
        if errors:
            raise ValidationError(errors)
        row["country"], row["channel"], row["price"], row["currency"] = country, channel, str(price), currency

    def before_save_instance(self, instance, row, **kwargs):
        instance.source = PriceSource.CSV
        instance.refreshed_at = timezone.now()
