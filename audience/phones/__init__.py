"""Phone number normalisation: any common spelling in, E.164 out."""

from __future__ import annotations

import functools
import hashlib
import hmac

import phonenumbers
import pycountry
from django.conf import settings

from audience.phones import shortcut

CHANNEL_PREFIXES = ("whatsapp:", "sms:", "tel:")


class InvalidPhone(ValueError):
    """The value is not a valid, possible phone number; str() says why, naming the value.

    ``reason`` says it without the value, for texts that are stored or shown to others (an
    import's row problems): a number written wrongly is still someone's number.
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


def normalize_phone(raw: str | None, default_region: str | None = None) -> str:
    """Return the E.164 form of ``raw`` or raise InvalidPhone with the reason.

    Accepts the ``whatsapp:`` and ``sms:`` prefixes Twilio uses, spaces, dots, dashes, brackets, a
    leading 00 instead of +, national numbers of ``default_region`` (an ISO country code; None: the
    ``PHONE_DEFAULT_COUNTRY`` setting, "" for none), and international numbers written without
    their "+" (``254712345678``) when they are not a valid national number.
    """
    if raw is None:
        raise InvalidPhone(EMPTY)
    value = str(raw).strip()
    if value[:1].isalpha():  # perhaps a channel prefix; the longest's length is lowered, not a whole cell
        lowered = value[:9].lower()
        for prefix in CHANNEL_PREFIXES:
            if lowered.startswith(prefix):
                value = value[len(prefix) :].strip()
                break
    if not value:
        raise InvalidPhone(EMPTY)
    if value.startswith("00"):
        value = "+" + value[2:]
    if value.startswith("+"):
        return shortcut.e164(value) or _e164(value, None)
    region = (settings.PHONE_DEFAULT_COUNTRY if default_region is None else default_region) or None
    try:
        return _e164(value, region)
    except InvalidPhone as national_problem:
        digits = "".join(char for char in value if char.isdigit())
        if not (MIN_DIGITS <= len(digits) <= MAX_DIGITS) or digits.startswith("0"):
            raise national_problem from None
        try:  # the country code written without its "+"
            return _e164("+" + digits, None)
        except InvalidPhone:
            raise national_problem from None


def _e164(value: str, region: str | None) -> str:
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        raise _invalid(value, _PARSE_ERRORS.get(exc.error_type, NOT_A_NUMBER)) from None
    if not phonenumbers.is_possible_number(number):
        raise _invalid(value, "is not a possible phone number (wrong length)")
    if not phonenumbers.is_valid_number(number):
        raise _invalid(value, "is not a valid phone number for its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def country_clean(value: str | None) -> str:
    """An ISO 3166 country code phonenumbers knows, upper case; "" for none. Raises ValueError naming it."""
    code = (value or "").strip().upper()
    if code and code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{value!r} is not a country code (ISO 3166, two letters, e.g. KE, GB, US)")
    return code


def phone_country(e164: str) -> str:
    """The ISO code of the country an E.164 number belongs to (``+1 416`` -> CA); "" when unknown."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return ""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(number.country_code, ())
    if len(regions) == 1:  # most calling codes belong to one country: no need to match the number's patterns
        region = regions[0]
    else:
        region = phonenumbers.region_code_for_number(number) or ""
    return "" if region in (phonenumbers.UNKNOWN_REGION, phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY) else region


@functools.cache
def country_choices() -> list[tuple[str, str]]:
    """(code, "Kenya (KE, +254)") for every country phone numbers know, by name."""
    # Names from pycountry (a few MB): phonenumbers' geocoder would hold ~100 MB in every process.
    choices = []
    for code in phonenumbers.SUPPORTED_REGIONS:
        country = pycountry.countries.get(alpha_2=code)
        name = getattr(country, "common_name", None) or (country.name if country else code)
        choices.append((code, f"{name} ({code}, +{phonenumbers.country_code_for_region(code)})"))
    return sorted(choices, key=lambda choice: choice[1])


MIN_DIGITS, MAX_DIGITS = 8, 15  # an international number's digits, its country code included
EMPTY = "phone is empty"
NOT_A_NUMBER = "is not a phone number"
_PARSE_ERRORS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: (
        "has no country code; write it as +<country code><number>, or choose a default country"
    ),
    phonenumbers.NumberParseException.NOT_A_NUMBER: NOT_A_NUMBER,
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "is too short to be a phone number",
    phonenumbers.NumberParseException.TOO_LONG: "is too long to be a phone number",
}


def _invalid(value: str, predicate: str) -> InvalidPhone:
    """ "'+1 55' is too short ..." for the one who typed it; "too short ..." for every other reader."""
    return InvalidPhone(f"{value!r} {predicate}", reason=predicate.removeprefix("is ").removeprefix("has "))


# --- Hashes kept after erasure ---------------------------------------------------------------
# A hash is HMAC-SHA256(PHONE_HASH_KEY, hex SHA-256 of the E.164 text). Keyed, so a dump of the
# suppression list or the consent audit cannot be reversed by hashing every possible number (a
# few seconds on one core without the key); over the plain digest, so hashes stored before the
# key existed were converted without the phones (audience migration 0012).


def phone_hash(e164: str) -> str:
    """The keyed hash of an E.164 number, kept on the suppression list and the consent audit."""
    return phone_digest_keyed(hashlib.sha256(e164.encode("ascii")).hexdigest())


def phone_digest_keyed(digest: str) -> str:
    """HMAC-SHA256 under PHONE_HASH_KEY of a phone's hex SHA-256 digest."""
    return hmac.new(_key(), digest.encode("ascii"), hashlib.sha256).hexdigest()


def phone_hash_pads() -> tuple[bytes, bytes]:
    """HMAC's inner and outer keys (RFC 2104), for computing the same hash in SQL with sha256()."""
    key = _key()
    if len(key) > hashlib.sha256().block_size:
        key = hashlib.sha256(key).digest()
    key = key.ljust(hashlib.sha256().block_size, b"\0")
    return bytes(byte ^ 0x36 for byte in key), bytes(byte ^ 0x5C for byte in key)


def _key() -> bytes:
    return settings.PHONE_HASH_KEY.encode("utf-8")
