"""How many attributes a contact may have and how big they may be: one rule for every door.

Attributes are a JSON object of what the business knows about a contact (plan, city, age), stored
with the contact and read by segments and templates. Without limits one import row held 500,000
keys. The API, the admin and imports all refuse a contact past a limit, naming the attribute to
blame; the limits are settings (README, Configuration). This module does not need Django set up:
the import's worker processes use it with limits read once in the main process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from config.json_limits import nested_deeper_than

_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(frozen=True)
class AttributeLimits:
    max_keys: int = 100
    key_chars: int = 64
    value_chars: int = 2000  # a text value's characters; a list or object value's JSON text
    total_bytes: int = 16384  # the whole object's JSON text, UTF-8
    depth: int = 64  # lists and objects, the attributes object included (settings.JSON_MAX_DEPTH)

    @classmethod
    def from_settings(cls) -> AttributeLimits:
        return cls(
            max_keys=settings.ATTRIBUTES_MAX_KEYS,
            key_chars=settings.ATTRIBUTE_KEY_MAX_CHARS,
            value_chars=settings.ATTRIBUTE_VALUE_MAX_CHARS,
            total_bytes=settings.ATTRIBUTES_MAX_BYTES,
            depth=settings.JSON_MAX_DEPTH,
        )

    def too_many(self, count: int) -> str | None:
        if count > self.max_keys:
            return f"{count} attributes; at most {self.max_keys} are allowed"
        return None

    def key_problem(self, key: str) -> str | None:
        if len(key) > self.key_chars:
            return f"the attribute name is longer than {self.key_chars} characters"
        return None

    def value_problem(self, value: Any) -> str | None:
        if type(value) is str:
            return f"longer than {self.value_chars} characters" if len(value) > self.value_chars else None
        if isinstance(value, dict | list):
            if nested_deeper_than(value, self.depth - 1):
                return f"nested deeper than {self.depth} levels"
            if len(_compact(value)) > self.value_chars:
                return f"longer than {self.value_chars} characters as JSON"
        return None

    def size_problem(self, text: str) -> str | None:
        """``text``: the attributes' JSON text as stored."""
        size = (
            len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        )  # a lone surrogate: reported later
        if size > self.total_bytes:
            return f"the attributes take {size} bytes as JSON; at most {self.total_bytes} are allowed"
        return None

    def problem(self, attributes: dict, text: str | None = None) -> tuple[str, str] | None:
        """(field, reason) for the first limit ``attributes`` passes: a key, or "attributes" for the whole.

        ``text`` is the attributes' JSON text when the caller has it; every value is checked before
        anything encodes the whole, so a value nested too deep is reported rather than recursed into.
        """
        reason = self.too_many(len(attributes))
        if reason:
            return "attributes", reason
        for key, value in attributes.items():
            reason = self.key_problem(str(key)) or self.value_problem(value)
            if reason:
                return str(key), reason
        reason = self.size_problem(_compact(attributes) if text is None else text)
        return ("attributes", reason) if reason else None
