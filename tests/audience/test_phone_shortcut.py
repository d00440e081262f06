"""normalize_phone's shortcut for international numbers says what phonenumbers says.

The shortcut (audience.phones.shortcut) precompiles phonenumbers' validity rule; it is held here to
the library itself on the library's own example numbers: every region and number type, the
non-geographic ones, the invalid examples, near misses of each, and national spellings with a
default country.
"""

import random

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from audience.phones import InvalidPhone, normalize_phone, shortcut

TYPES = (
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST,
    PhoneNumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER,
    PhoneNumberType.PAGER,
    PhoneNumberType.UAN,
    PhoneNumberType.VOICEMAIL,
)


def _examples() -> list[tuple[str, phonenumbers.PhoneNumber]]:
    """(region, number) for every example the library has; "001" for the non-geographic ones."""
    examples = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        numbers = [phonenumbers.example_number_for_type(region, kind) for kind in TYPES]
        numbers += [phonenumbers.example_number(region), phonenumbers.invalid_example_number(region)]
        examples += [(region, number) for number in numbers if number is not None]
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is not None:
            examples.append(("001", number))
    return examples


EXAMPLES = _examples()


def _near_misses(e164: str, rng: random.Random) -> list[str]:
    """A digit short, a digit over, a digit changed: what a typo makes of a number."""
    changed = rng.randrange(2, len(e164))
    digit = str((int(e164[changed]) + rng.randint(1, 9)) % 10)
    return [e164[:-1], e164 + "5", e164[:changed] + digit + e164[changed + 1 :]]


def _international(number: phonenumbers.PhoneNumber, rng: random.Random) -> list[str]:
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    spaced = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    return [e164, spaced, spaced.replace(" ", "."), *_near_misses(e164, rng)]


def _by_phonenumbers(spelling: str, region: str | None = None) -> str | None:
    """The E.164 form phonenumbers alone gives a spelling: parsed, possible and valid; else None."""
    try:
        number = phonenumbers.parse(spelling, region)
    except phonenumbers.NumberParseException:
        return None
    if not (phonenumbers.is_possible_number(number) and phonenumbers.is_valid_number(number)):
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def _normalised(spelling: str, region: str = "") -> str | None:
    try:
        return normalize_phone(spelling, region)
    except InvalidPhone:
        return None


def test_the_library_has_examples_of_every_region():
    regions = {region for region, _ in EXAMPLES}
    assert regions >= set(phonenumbers.SUPPORTED_REGIONS) and len(EXAMPLES) > 1500


def test_the_shortcut_says_valid_only_when_phonenumbers_does_and_gives_its_e164_form():
    rng = random.Random(23)
    answered = valid = 0
    for _, number in EXAMPLES:
        for spelling in _international(number, rng):
            expected = _by_phonenumbers(spelling)
            got = shortcut.e164(spelling)
            assert got is None or got == expected, spelling
            valid += expected is not None
            answered += got is not None
    # The shortcut is worth its keep: it settles most valid numbers without parsing them.
    assert valid > 1500 and answered > valid * 0.8, (answered, valid)


def test_normalize_phone_gives_what_phonenumbers_gives_for_every_international_spelling():
    rng = random.Random(7)
    for _, number in EXAMPLES:
        for spelling in _international(number, rng):
            expected = _by_phonenumbers(spelling)
            assert _normalised(spelling) == expected, spelling
            assert _normalised("00" + spelling.removeprefix("+")) == expected, spelling
            assert _normalised(" whatsapp:" + spelling) == expected, spelling


@pytest.mark.parametrize("region", sorted(phonenumbers.SUPPORTED_REGIONS))
def test_national_spellings_with_a_default_country_give_what_phonenumbers_gives(region):
    numbers = [number for example_region, number in EXAMPLES if example_region == region]
    for number in numbers:
        national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
        expected = _by_phonenumbers(national, region)
        if expected is not None:
            assert _normalised(national, region) == expected, national
