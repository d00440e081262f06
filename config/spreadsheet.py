"""Neutralise spreadsheet formulas in exported cells (CSV injection)."""

from __future__ import annotations

import re

_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")
_PLAIN_NUMBER = re.compile(r"^[+-]?\d[\d\s().-]*$")


def escape_formula(value):
    """Prefix a text cell that a spreadsheet would run as a formula with a quote.

    A signed plain number such as an E.164 phone (+14155550100) is left alone:
    a spreadsheet reads it as a number, never as a formula.
    """
    if not isinstance(value, str) or not value or not value.startswith(_TRIGGERS):
        return value
    if value[0] in "+-" and _PLAIN_NUMBER.match(value):
        return value
    return "'" + value
