"""One masking policy for every door, and the redaction of free text (logs, stored error texts).

Who sees what: a user holding ``audience.see_full_phone`` (Staff and superusers) sees phone
numbers, names and e-mail addresses whole; everyone else (Analysts) sees them masked, in the
API, the admin, its exports and the reporting pages alike. Free text that may quote a number (a
log line, an exception's message) goes through ``redact``, which finds phones in any common
spelling and e-mail addresses.
"""

from __future__ import annotations

import re

FULL_PHONE_PERMISSION = "audience.see_full_phone"


def can_see_full_phones(user) -> bool:
    return bool(user and user.is_authenticated and user.has_perm(FULL_PHONE_PERMISSION))


def request_sees_full(request) -> bool:
    """Whether the user behind ``request`` (Django's or DRF's; None for none) sees personal data whole."""
    return can_see_full_phones(getattr(request, "user", None))


# --- Masks for values known to be personal ---------------------------------------------------


def phone_mask(value: str | None) -> str:
    """+254712345678 -> +2547******78; a channel prefix (whatsapp:) is kept."""
    if not value:
        return value or ""
    prefix, _, number = value.rpartition(":")
    prefix = f"{prefix}:" if prefix else ""
    keep_head = 5 if number.startswith("+") else 4
    if len(number) <= keep_head + 2:
        return prefix + "*" * len(number)
    return prefix + number[:keep_head] + "*" * (len(number) - keep_head - 2) + number[-2:]


def phone_shown(value: str | None, full: bool) -> str:
    return (value or "") if full else phone_mask(value)


def name_mask(value: str | None) -> str:
    """Wanjiru Kamau -> W. K.: enough to tell rows apart, not to name anyone."""
    return " ".join(f"{word[0]}." for word in (value or "").split())


def email_mask(value: str | None) -> str:
    """wanjiru@example.org -> w***@***.org."""
    if not value:
        return value or ""
    local, _, domain = value.rpartition("@")
    tld = domain[domain.rfind(".") :] if "." in domain else ""
    return f"{local[:1]}***@***{tld}"


def contact_masked(data: dict) -> dict:
    """A contact's representation with its phone, name and e-mail address masked (absent keys stay absent)."""
    masks = {"phone": phone_mask, "name": name_mask, "email": email_mask}
    return {key: masks[key](value) if key in masks else value for key, value in data.items()}


def shown(kind: str, value, full: bool):
    """``value`` as a reader who does (``full``) or does not hold the permission sees it.

    ``kind``: phone (also a whatsapp:/sms: address), name, email, text (free text: redacted) or
    json (every string of a JSON value redacted).
    """
    if full or value in (None, ""):
        return value
    if kind == "json":
        return redact_json(value)
    return {"phone": phone_mask, "name": name_mask, "email": email_mask, "text": redact}[kind](value)


# --- Redaction of free text ------------------------------------------------------------------

# A phone in any common spelling: 8 to 15 digits, perhaps after "+", "%2B" (a URL) or "(", with
# up to two of space . - / ( ) between digits; never inside a word, a longer number, an ISO date,
# an IPv4 address or a decimal fraction.
PHONE_RE = re.compile(
    r"(?:(?<![\w%])(?:\+|%2[Bb])|(?<![\w.%+\-]))"
    r"(?!\d{4}-\d\d-\d\d(?!\d))(?!\d{1,3}(?:\.\d{1,3}){3}(?!\d))(?!0\.)"
    r"\(?\d(?:[ .\-/()]{0,2}\d){7,14}(?![\w])"
)
# An address, also URL-encoded (%40).
EMAIL_RE = re.compile(r"[\w.+\-%]+(?:@|%40)[\w\-]+(?:\.[\w\-]+)+", re.ASCII)


# Plain digits with no "+" and no separator need more of them: a log's ids stay readable below 10**8.
BARE_DIGITS_MIN = 9


def _phone_hidden(found: re.Match) -> str:
    text = found.group(0)
    if text.isdigit() and len(text) < BARE_DIGITS_MIN:
        return text
    return text[:3] + "*" * (len(text) - 5) + text[-2:]


def redact(text: str) -> str:
    """Mask every phone number and e-mail address in ``text`` (+254712345678 -> +25********78)."""
    if not text or not any(char.isdigit() or char == "@" or char == "%" for char in text):
        return text
    text = EMAIL_RE.sub("[email]", text)
    return PHONE_RE.sub(_phone_hidden, text)


# Keys whose value is a person's name wherever they appear (WhatsApp's ProfileName, a form's fields).
NAME_KEYS = frozenset({"profilename", "name", "full_name", "first_name", "last_name"})


def redact_json(value):
    """``redact`` applied to every string (keys too) of a JSON-like value; names under NAME_KEYS masked."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(key)): _value_redacted(str(key), item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_json(item) for item in value]
    return value


def _value_redacted(key: str, value):
    return name_mask(value) if key.lower() in NAME_KEYS and isinstance(value, str) else redact_json(value)
