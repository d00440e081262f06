"""How deep JSON from outside may nest: settings.JSON_MAX_DEPTH containers, at every door that decodes it.

Python's json decoder recurses once per level and raises RecursionError near 1,000 levels, and code that
walks a decoded value (validation, json.dumps, jsonb) recurses as well; nothing the platform accepts needs
more than a few levels. Every decoder of outside JSON (the API's parser and its JSON fields, the admin's
JSON fields, the webhooks) uses DepthLimitedJSONDecoder, so too deep is an ordinary JSON error (a 400 or
a form error naming the field), never a 500.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.conf import settings
from django.db import models

# A JSON string (skipped whole) or a bracket: enough to find where the nesting first passes the limit.
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def max_depth() -> int:
    return settings.JSON_MAX_DEPTH


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` holds more than ``limit`` nested lists and objects (without recursing itself)."""
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _too_deep_at(text: str, limit: int) -> int:
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        bracket = match.group()
        if bracket in "[{":
            depth += 1
            if depth > limit:
                return match.start()
        elif bracket in "]}":
            depth -= 1
    return 0


class DepthLimitedJSONDecoder(json.JSONDecoder):
    """json.JSONDecoder that refuses more than JSON_MAX_DEPTH levels with a JSONDecodeError saying where."""

    def decode(self, s, *args, **kwargs):
        limit = max_depth()
        try:
            value = super().decode(s, *args, **kwargs)
        except RecursionError:
            too_deep = True
        else:
            too_deep = nested_deeper_than(value, limit)
        if too_deep:
            raise json.JSONDecodeError(f"nested deeper than {limit} levels", s, _too_deep_at(s, limit))
        return value


# formfield_overrides for a ModelAdmin whose model has JSON fields: they decode with the limit.
ADMIN_JSON_FORMFIELDS = {models.JSONField: {"decoder": DepthLimitedJSONDecoder}}
