"""A shortcut for plain international numbers: phonenumbers' validity rule, precompiled.

Imports normalise every row's phone, and phonenumbers.parse with is_valid_number costs more than
all the row's other cells together. For a number written ``+<country code><national number>``
(spaces, dots, dashes, brackets and slashes allowed) whose national number has no leading zero
and nothing a national prefix could be stripped from, parse builds PhoneNumber(code, int(rest));
:func:`e164` applies the same validity rule (the region's general pattern and lengths, and one
number type's pattern and lengths) with one compiled pattern per region. It only ever says
"valid, and this is the E.164 form"; every other answer is None and the caller parses. A test
holds it to phonenumbers on the library's example numbers of every region and number type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from phonenumbers.phonemetadata import PhoneMetadata, PhoneNumberDesc
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

PUNCTUATION = str.maketrans("", "", " -.()/\u00a0")
# Every number type phonenumbers knows; mobile and fixed line first, as most numbers are one of them.
TYPES = (
    "mobile",
    "fixed_line",
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)


@dataclass(frozen=True)
class _Region:
    """One region's validity rule: the general lengths as a set, the rest as one regular expression.

    The general pattern is a lookahead, then the types are alternatives, each behind a lookahead for
    its own lengths (a type without lengths has none).
    """

    leading_digits: re.Pattern | None
    lengths: frozenset[int]
    rule: re.Pattern

    def valid(self, national: str) -> bool:
        return (not self.lengths or len(national) in self.lengths) and self.rule.fullmatch(national) is not None


@dataclass(frozen=True)
class _Country:
    national_prefix: re.Pattern | None
    regions: tuple[_Region, ...]


def _lengths_guard(lengths: list[int]) -> str:
    return "(?=(?:" + "|".join(f".{{{int(size)}}}" for size in sorted(lengths)) + r")\Z)" if lengths else ""


def _type_rule(number_desc: PhoneNumberDesc | None) -> str | None:
    if number_desc is None or not number_desc.national_number_pattern:
        return None
    return _lengths_guard(number_desc.possible_length or []) + f"(?:{number_desc.national_number_pattern})"


def _region(metadata: PhoneMetadata) -> _Region | None:
    general = metadata.general_desc
    if general is None or not general.national_number_pattern:
        return None
    types = [rule for rule in (_type_rule(getattr(metadata, kind)) for kind in TYPES) if rule]
    # A region without number types has no valid number: (?!) never matches.
    alternatives = "|".join(types) if types else "(?!)"
    rule = rf"(?=(?:{general.national_number_pattern})\Z)(?:{alternatives})"
    leading = re.compile(metadata.leading_digits) if metadata.leading_digits else None
    return _Region(leading, frozenset(general.possible_length or ()), re.compile(rule))


@lru_cache(maxsize=512)
def _country(code: int) -> _Country | None:
    """The calling code's regions in phonenumbers' order; None when the shortcut does not apply."""
    names = COUNTRY_CODE_TO_REGION_CODE.get(code, ())
    if not names or "001" in names:  # non-geographic numbers: phonenumbers' own path
        return None
    metadatas = [PhoneMetadata.metadata_for_region(name) for name in names]
    regions = tuple(_region(metadata) for metadata in metadatas if metadata is not None)
    if not regions or any(region is None for region in regions):
        return None
    prefix = metadatas[0].national_prefix_for_parsing if metadatas[0] else None
    return _Country(re.compile(prefix) if prefix else None, tuple(region for region in regions if region))


def _split_country_code(digits: str) -> tuple[int, str] | None:
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in COUNTRY_CODE_TO_REGION_CODE:
            return code, digits[size:]
    return None


# The country code of every number by its first three digits (what _split_country_code finds), as
# (code, its length); a lead that starts with 0 or has no code is absent.
_CODE_BY_LEAD = {
    lead: (split[0], 3 - len(split[1]))
    for lead in (f"{number:03d}" for number in range(100, 1000))
    if (split := _split_country_code(lead)) is not None
}


def _valid(code: int, national: str) -> bool:
    """phonenumbers.is_valid_number for PhoneNumber(code, int(national)), when the shortcut can tell."""
    country = _country(code)
    if country is None:
        return False
    if country.national_prefix is not None and country.national_prefix.match(national):
        return False  # parse() would try to strip a national prefix: let it
    for region in country.regions:
        # phonenumbers picks the first region whose leading digits match, else the first the number is valid in.
        if region.leading_digits is not None:
            if region.leading_digits.match(national):
                return region.valid(national)
        elif region.valid(national):
            return True
    return False


def e164(value: str) -> str | None:
    """The E.164 form of ``value`` (stripped, starting with "+") when the shortcut can tell it is valid; else None."""
    digits = value.translate(PUNCTUATION)
    if not (digits[:1] == "+" and 8 <= len(digits) <= 16 and digits.isascii() and digits[1:].isdigit()):
        return None
    lead = _CODE_BY_LEAD.get(digits[1:4])
    if lead is None:
        return None
    code, size = lead
    national = digits[1 + size :]
    if national[:1] == "0" or not _valid(code, national):
        return None
    return digits  # "+", the code and the national number
