"""Phone number normalisation: any common spelling in, E.164 out."""

from __future__ import annotations

import hashlib

import phonenumbers

CHANNEL_PREFIXES = ("whatsapp:", "sms:", "tel:")


class InvalidPhone(ValueError):
    """The value is not a valid, possible phone number; str() says why."""


def normalize_phone(raw: str | None, default_region: str | None = None) -> str:
    """Return the E.164 form of ``raw`` or raise InvalidPhone with the reason.

    Accepts the ``whatsapp:`` and ``sms:`` prefixes Twilio uses, spaces, dots,
    dashes, brackets, a leading 00 instead of +, and national numbers when a
    default region is given.
    """
    if raw is None:
        raise InvalidPhone("phone is empty")
    value = str(raw).strip()
    lowered = value.lower()
    for prefix in CHANNEL_PREFIXES:
        if lowered.startswith(prefix):
            value = value[len(prefix) :].strip()
            break
    if not value:
        raise InvalidPhone("phone is empty")
    if value.startswith("00"):
        value = "+" + value[2:]
    try:
        number = phonenumbers.parse(value, None if value.startswith("+") else default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(_parse_error(value, exc)) from None
    if not phonenumbers.is_possible_number(number):
        raise InvalidPhone(f"{value!r} is not a possible phone number (wrong length)")
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone(f"{value!r} is not a valid phone number for its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _parse_error(value: str, exc: phonenumbers.NumberParseException) -> str:
    if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
        return f"{value!r} has no country code; write it as +<country code><number>"
    if exc.error_type == phonenumbers.NumberParseException.NOT_A_NUMBER:
        return f"{value!r} is not a phone number"
    if exc.error_type == phonenumbers.NumberParseException.TOO_SHORT_NSN:
        return f"{value!r} is too short to be a phone number"
    if exc.error_type == phonenumbers.NumberParseException.TOO_LONG:
        return f"{value!r} is too long to be a phone number"
    return f"{value!r} is not a phone number"


def phone_hash(e164: str) -> str:
    """A stable hash of an E.164 number, kept on the suppression list after erasure."""
    return hashlib.sha256(e164.encode("ascii")).hexdigest()
