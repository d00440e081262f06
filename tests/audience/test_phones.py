import pytest

from audience.phones import InvalidPhone, normalize_phone


@pytest.mark.parametrize(
    "spelling",
    [
        "+254712345678",
        "whatsapp:+254712345678",
        "sms:+254 712 345 678",
        "00254712345678",
        "+254 (712) 345-678",
        " WhatsApp:+254.712.345.678 ",
    ],
)
def test_common_spellings_normalise_to_e164(spelling):
    assert normalize_phone(spelling) == "+254712345678"


def test_national_number_needs_a_region():
    assert normalize_phone("0712 345 678", default_region="KE") == "+254712345678"
    with pytest.raises(InvalidPhone, match="no country code"):
        normalize_phone("0712 345 678")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("hello", "not a phone number"),
        ("+2547", "too short|not a possible"),
        ("+99912345678", "no country code|not a phone number|not a valid|not a possible"),
        ("+1 555 000 0000", "not a valid phone number"),
    ],
)
def test_invalid_numbers_are_refused_with_a_reason(value, reason):
    with pytest.raises(InvalidPhone, match=reason):
        normalize_phone(value)
