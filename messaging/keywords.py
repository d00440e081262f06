"""Consent and help keywords in inbound messages.

A keyword is the whole message: one word, trimmed, case-insensitive. Trailing
full stops and exclamation marks are ignored ("Stop." and "STOP!" opt out: when
in doubt a compliance rule errs towards honouring the opt-out), but anything
else makes it plain text: "stop please", "stopp" and "don't stop" are not keywords.
"""

from __future__ import annotations

from django.db import models


class Keyword(models.TextChoices):
    STOP = "stop", "Opt out"
    START = "start", "Opt in"
    HELP = "help", "Help"


KEYWORDS = {
    **dict.fromkeys(("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"), Keyword.STOP),
    **dict.fromkeys(("START", "YES", "UNSTOP"), Keyword.START),
    **dict.fromkeys(("HELP", "INFO"), Keyword.HELP),
}
_IGNORED_TRAILING = ".!"


def keyword_parse(body: str | None) -> tuple[Keyword, str] | None:
    """Return (meaning, the keyword as written in upper case) or None for plain text."""
    word = (body or "").strip().rstrip(_IGNORED_TRAILING).strip().upper()
    meaning = KEYWORDS.get(word)
    return (meaning, word) if meaning else None
