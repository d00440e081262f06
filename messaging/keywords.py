"""Consent and help keywords in inbound messages.

A keyword is the whole message: one keyword, case-insensitive. Before comparing,
the text is put in Unicode NFKC form (a full-width ＳＴＯＰ is STOP), invisible
characters are dropped (a zero-width space pasted before STOP), dashes become
"-", runs of white space one space, and white space and punctuation at the end
are ignored ("Stop?", "STOP!" and "Stop." opt out: when in doubt a compliance
rule errs towards honouring the opt-out). Anything else makes it plain text:
"stop please", "stopp", "STOP STOP" and "don't stop" are not keywords.

The same steps exist once more in SQL (``keyword_text_sql``), built from the
same character tables, for pages that filter stored messages by keyword.
"""

from __future__ import annotations

import re
import unicodedata

from django.db import models


class Keyword(models.TextChoices):
    STOP = "stop", "Opt out"
    START = "start", "Opt in"
    HELP = "help", "Help"


# ARRET/ARRÊT: the French opt-out word carriers honour for Canadian numbers.
OPT_OUT_WORDS = (
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
    "OPT OUT",
    "OPT-OUT",
    "ARRET",
    "ARRÊT",
)
KEYWORDS = {
    **dict.fromkeys(OPT_OUT_WORDS, Keyword.STOP),
    **dict.fromkeys(("START", "YES", "UNSTOP"), Keyword.START),
    **dict.fromkeys(("HELP", "INFO"), Keyword.HELP),
}

# Characters that show nothing, dropped wherever they are: the zero-width ones, and the other
# invisible formatting marks (soft hyphen, direction marks) a keyboard or a copy-paste can leave.
INVISIBLE = (
    "\u200b\u200c\u200d\u2060\ufeff"  # zero-width space, non-joiner, joiner; word joiner; BOM
    "\u00ad\u180e\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2061\u2062\u2063\u2064"
)
# Dashes NFKC leaves as they are; each becomes "-" so that OPT‐OUT is OPT-OUT.
DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63"
SPACES = " \t\n\r\f\v"
# Ignored at the end of the text, with white space (NFKC has already made ！ and ？ ASCII).
TRAILING = SPACES + ".!?,;:…。、¡¿\"'“”‘’«»)]}*~"
_SPACE_RUN = re.compile(f"[{re.escape(SPACES)}]+")
_DROP = {ord(char): None for char in INVISIBLE} | {ord(char): "-" for char in DASHES}


def keyword_text(body: str | None) -> str:
    """The text of a message as it is compared with keywords: normalised, trimmed, in upper case."""
    text = unicodedata.normalize("NFKC", body or "").translate(_DROP)
    return _SPACE_RUN.sub(" ", text).strip(SPACES).rstrip(TRAILING).upper()


def keyword_parse(body: str | None) -> tuple[Keyword, str] | None:
    """Return (meaning, the keyword in upper case) or None for plain text."""
    word = keyword_text(body)
    meaning = KEYWORDS.get(word)
    return (meaning, word) if meaning else None


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def keyword_text_sql(column: str) -> str:
    """``keyword_text`` as a PostgreSQL expression over ``column`` (a trusted column reference)."""
    text = f"normalize(coalesce({column}, ''), NFKC)"
    # translate() maps by position: the dashes line up with the hyphens, and the invisible characters
    # after them, having no counterpart in the (shorter) replacement, are deleted.
    text = f"translate({text}, {_sql_literal(DASHES + INVISIBLE)}, {_sql_literal('-' * len(DASHES))})"
    text = f"regexp_replace({text}, {_sql_literal('[' + SPACES + ']+')}, ' ', 'g')"
    text = f"btrim({text}, {_sql_literal(SPACES)})"
    return f"upper(rtrim({text}, {_sql_literal(TRAILING)}))"
