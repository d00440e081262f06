"""The fake's prices: what Twilio would charge per SMS segment or WhatsApp message, and its Pricing API.

Approximate list prices in USD. A country has one or two carriers whose long-code prices differ a
little, as Twilio's do; unlisted countries are not served (the Pricing API answers 404).
"""

from __future__ import annotations

from decimal import Decimal

# ISO -> (name, calling code, [(carrier, mcc, mnc, long-code price, short-code price)], WhatsApp price)
COUNTRIES: dict[str, tuple[str, str, list[tuple[str, str, str, str, str]], str]] = {
    "US": ("United States", "1", [("AT&T", "310", "410", "0.0083", "0.0094")], "0.0300"),
    "GB": (
        "United Kingdom",
        "44",
        [("Vodafone", "234", "15", "0.0524", "0.0600"), ("EE", "234", "30", "0.0498", "0.0600")],
        "0.0579",
    ),
    "KE": (
        "Kenya",
        "254",
        [("Safaricom", "639", "02", "0.1290", "0.1500"), ("Airtel", "639", "03", "0.1187", "0.1500")],
        "0.0297",
    ),
    "NG": ("Nigeria", "234", [("MTN", "621", "30", "0.2986", "0.3100")], "0.0566"),
    "DE": ("Germany", "49", [("Telekom", "262", "01", "0.1098", "0.1200")], "0.1416"),
}


def country_for(to: str) -> str | None:
    digits = to.removeprefix("whatsapp:").removeprefix("+")
    for iso, (_name, code, _carriers, _wa) in sorted(COUNTRIES.items(), key=lambda item: -len(item[1][1])):
        if digits.startswith(code):
            return iso
    return None


def segments_for(body: str) -> int:
    """Enough for the fake: plain ASCII is GSM-7 (160, then 153 a part), anything else UCS-2 (70, then 67)."""
    single, multi = (160, 153) if body.isascii() else (70, 67)
    units = len(body.encode("utf-16-le")) // 2 if not body.isascii() else len(body)
    return 1 if units <= single else -(-units // multi)


def message_price(to: str, body: str) -> str | None:
    """Twilio's price field for a final message: a negative amount; None for a country it does not price."""
    iso = country_for(to)
    if iso is None:
        return None
    _name, _code, carriers, whatsapp = COUNTRIES[iso]
    if to.startswith("whatsapp:"):
        amount = Decimal(whatsapp)
    else:
        amount = Decimal(carriers[0][3]) * segments_for(body or " ")
    return str(-amount.quantize(Decimal("0.00001")))


def pricing_country(iso: str, base_url: str) -> dict | None:
    """The Pricing API's /v1/Messaging/Countries/{iso} answer."""
    found = COUNTRIES.get(iso.upper())
    if found is None:
        return None
    name, _code, carriers, _wa = found
    outbound = [
        {
            "carrier": carrier,
            "mcc": mcc,
            "mnc": mnc,
            "prices": [
                {"number_type": "mobile", "base_price": long_code, "current_price": long_code},
                {"number_type": "local", "base_price": long_code, "current_price": long_code},
                {"number_type": "shortcode", "base_price": short_code, "current_price": short_code},
            ],
        }
        for carrier, mcc, mnc, long_code, short_code in carriers
    ]
    return {
        "country": name,
        "iso_country": iso.upper(),
        "outbound_sms_prices": outbound,
        "inbound_sms_prices": [{"number_type": "local", "base_price": "0.0075", "current_price": "0.0075"}],
        "price_unit": "USD",
        "url": f"{base_url}/v1/Messaging/Countries/{iso.upper()}",
    }
