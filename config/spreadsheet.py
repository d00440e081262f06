"""CSV downloads as spreadsheets read them: formulas neutralised (CSV injection), UTF-8 with a BOM."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator

from django.http import StreamingHttpResponse

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


# Excel reads a CSV without a byte-order mark as the machine's legacy code page ("JosÃ©").
BOM = "\ufeff"


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_lines(rows: Iterable[Iterable]) -> Iterator[str]:
    """The BOM, then each row as a CSV line."""
    writer = csv.writer(_Echo())
    yield BOM
    for row in rows:
        yield writer.writerow(row)


def csv_download(rows: Iterable[Iterable], filename: str) -> StreamingHttpResponse:
    """A streamed CSV attachment (rows already hold their header and escaped cells)."""
    response = StreamingHttpResponse(csv_lines(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
