"""Placeholder rendering and SMS segment counting, with no Django template engine.

User-written bodies are rendered by a small regex renderer: ``{{ name }}``,
``{{ attributes.city }}`` and ``{{ event.amount }}`` are the only things it
understands, so a body can never reach code, filters or tags. A value that is
missing (and has no fallback) is reported, never rendered as an empty hole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

CONTACT_FIELDS = frozenset({"name", "email", "phone", "locale", "channel", "timezone"})
NAMESPACES = frozenset({"attributes", "event"})

# Anything between double braces is a placeholder candidate; the name inside is checked strictly.
PLACEHOLDER_RE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)?$")

# GSM 03.38: the basic table (one septet each) and the extension table (escape + one septet).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")
GSM7_ALL = GSM7_BASIC | GSM7_EXTENSION

GSM7 = "GSM-7"
UCS2 = "UCS-2"
SEGMENT_LIMITS = {GSM7: (160, 153), UCS2: (70, 67)}


@dataclass(frozen=True)
class Segments:
    encoding: str
    segments: int
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2


@dataclass
class RenderResult:
    text: str = ""
    content_variables: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    segments: Segments | None = None

    @property
    def ok(self) -> bool:
        return not self.missing

    @property
    def skip_reason(self) -> str:
        return f"missing variable {', '.join(self.missing)}" if self.missing else ""

    @property
    def content_variables_json(self) -> str:
        return json.dumps(self.content_variables, ensure_ascii=False, separators=(",", ":"))


# --- Placeholders --------------------------------------------------------------------------


def placeholder_names(text: str) -> list[str]:
    """Every placeholder of ``text`` as written (stripped), in order, without duplicates."""
    seen: dict[str, None] = {}
    for match in PLACEHOLDER_RE.finditer(text or ""):
        seen.setdefault(match.group(1).strip(), None)
    return list(seen)


def is_known_name(name: str, *, allow_event: bool = True) -> bool:
    if not NAME_RE.match(name):
        return False
    if "." not in name:
        return name in CONTACT_FIELDS
    namespace, _key = name.split(".", 1)
    return namespace == "attributes" or (allow_event and namespace == "event")


def unknown_names(names: Iterable[str], *, allow_event: bool = True) -> list[str]:
    return [name for name in names if not is_known_name(name, allow_event=allow_event)]


# --- Values --------------------------------------------------------------------------------


def value_text(value: Any) -> str | None:
    """The text a value renders as; None when it counts as missing (absent, null, blank)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


Lookup = Callable[[str], Any]


def contact_lookup(contact: Any, context: Mapping[str, Any] | None = None) -> Lookup:
    """Resolve names against a Contact (fields and attributes) and an event context."""
    context = context or {}

    def lookup(name: str) -> Any:
        if "." not in name:
            return getattr(contact, name, None) if contact is not None and name in CONTACT_FIELDS else None
        namespace, key = name.split(".", 1)
        if namespace == "attributes":
            return (getattr(contact, "attributes", None) or {}).get(key) if contact is not None else None
        if namespace == "event":
            return context.get(key)
        return None

    return lookup


def sample_lookup(sample: Mapping[str, Any]) -> Lookup:
    """Resolve names against sample values: flat ("attributes.city") or nested ({"attributes": {...}})."""

    def lookup(name: str) -> Any:
        if name in sample:
            return sample[name]
        if "." in name:
            namespace, key = name.split(".", 1)
            nested = sample.get(namespace)
            if isinstance(nested, Mapping):
                return nested.get(key)
        return None

    return lookup


def resolve(name: str, lookup: Lookup, fallbacks: Mapping[str, Any]) -> str | None:
    text = value_text(lookup(name))
    if text is None:
        text = value_text(fallbacks.get(name))
    return text


# --- Rendering -----------------------------------------------------------------------------


def render_text(body: str, lookup: Lookup, fallbacks: Mapping[str, Any] | None = None) -> tuple[str, list[str]]:
    """Substitute every placeholder; returns the text and the names that had no value."""
    fallbacks = fallbacks or {}
    missing: dict[str, None] = {}

    def substitute(match: re.Match) -> str:
        name = match.group(1).strip()
        text = resolve(name, lookup, fallbacks)
        if text is None:
            missing.setdefault(name, None)
            return match.group(0)
        return text

    return PLACEHOLDER_RE.sub(substitute, body or ""), list(missing)


def render_content_variables(
    mapping: Mapping[str, str], lookup: Lookup, fallbacks: Mapping[str, Any] | None = None
) -> tuple[dict[str, str], list[str]]:
    """Twilio ContentVariables ({"1": "Amina", ...}) from our mapping ({"1": "name", ...})."""
    fallbacks = fallbacks or {}
    values: dict[str, str] = {}
    missing: list[str] = []
    for number in sorted(mapping, key=lambda key: int(key) if str(key).isdigit() else 0):
        name = content_variable_name(mapping[number])
        text = resolve(name, lookup, fallbacks)
        if text is None:
            if name not in missing:
                missing.append(name)
        else:
            values[str(number)] = text
    return values, missing


def content_variable_name(value: str) -> str:
    """Mapping values may be written bare ("name") or as a placeholder ("{{ name }}")."""
    value = str(value).strip()
    match = PLACEHOLDER_RE.fullmatch(value)
    return match.group(1).strip() if match else value


# --- SMS segments --------------------------------------------------------------------------


def sms_encoding(text: str) -> str:
    return GSM7 if GSM7_ALL.issuperset(text) else UCS2


def _unit_costs(text: str, encoding: str) -> list[int]:
    if encoding == GSM7:
        return [2 if char in GSM7_EXTENSION else 1 for char in text]
    return [2 if ord(char) > 0xFFFF else 1 for char in text]


def _units(text: str, encoding: str) -> int:
    """Septets (GSM-7: an extension character is an escape pair) or UTF-16 code units (UCS-2)."""
    if encoding == GSM7:
        return len(text) + sum(text.count(char) for char in GSM7_EXTENSION if char in text)
    return len(text.encode("utf-16-le")) // 2


def sms_segments(text: str) -> Segments:
    """Segment count as a handset splits it: an escape pair or a surrogate pair never straddles two parts."""
    encoding = sms_encoding(text)
    single, multi = SEGMENT_LIMITS[encoding]
    units = _units(text, encoding)
    if units == 0:
        return Segments(encoding, 0, 0)
    if units <= single:
        return Segments(encoding, 1, units)
    segments, used = 1, 0
    for cost in _unit_costs(text, encoding):
        if used + cost > multi:
            segments, used = segments + 1, 0
        used += cost
    return Segments(encoding, segments, units)
