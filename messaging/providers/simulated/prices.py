"""What the simulated provider charges: approximate list prices in USD per destination country and channel.

SMS prices are per segment (a long-code sender's rate); WhatsApp prices are per message (a
marketing template: Meta's fee for the country plus the provider's per-message fee). Countries not
listed pay ``REST_OF_WORLD``. They make the embedded mode's cost figures look like a real bill.
"""

from __future__ import annotations

from decimal import Decimal

from audience.models import Channel

CURRENCY = "USD"

SMS = {
    "US": "0.0083",
    "CA": "0.0083",
    "GB": "0.0524",
    "IE": "0.0790",
    "DE": "0.1098",
    "FR": "0.0892",
    "ES": "0.0874",
    "IT": "0.0914",
    "NL": "0.1165",
    "KE": "0.1290",
    "NG": "0.2986",
    "ZA": "0.0399",
    "GH": "0.2380",
    "UG": "0.1752",
    "TZ": "0.2346",
    "IN": "0.0835",
    "BR": "0.0580",
    "MX": "0.0917",
    "AU": "0.0515",
}
WHATSAPP = {
    "US": "0.0300",
    "CA": "0.0300",
    "GB": "0.0579",
    "IE": "0.0799",
    "DE": "0.1416",
    "FR": "0.0909",
    "ES": "0.0665",
    "IT": "0.0741",
    "NL": "0.1647",
    "KE": "0.0297",
    "NG": "0.0566",
    "ZA": "0.0429",
    "GH": "0.0800",
    "UG": "0.0800",
    "TZ": "0.0800",
    "IN": "0.0157",
    "BR": "0.0675",
    "MX": "0.0486",
    "AU": "0.0823",
}
REST_OF_WORLD = {Channel.SMS: Decimal("0.0750"), Channel.WHATSAPP: Decimal("0.0800")}
TABLES = {Channel.SMS: SMS, Channel.WHATSAPP: WHATSAPP}


def unit_price(country: str, channel: str) -> Decimal:
    """The price of one SMS segment, or one WhatsApp message, to ``country``."""
    listed = TABLES.get(channel, {}).get(country)
    return Decimal(listed) if listed else REST_OF_WORLD.get(channel, REST_OF_WORLD[Channel.SMS])


def listed_countries() -> list[str]:
    return sorted(set(SMS) | set(WHATSAPP))
