"""Strict parsing of environment variables.

Every setting the platform reads from the environment goes through one of these
helpers, so a bad value stops start-up with a message naming the variable
instead of surfacing later as a confusing runtime error.
"""

from __future__ import annotations

import os
import zoneinfo
from collections.abc import Mapping
from urllib.parse import urlparse

import phonenumbers
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# Periods DRF's throttles understand (they read the first letter).
_RATE_PERIODS = ("s", "sec", "second", "m", "min", "minute", "h", "hour", "d", "day")


class Env:
    def __init__(self, environ: Mapping[str, str] | None = None):
        self.environ = os.environ if environ is None else environ

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def str(self, name: str, default: str | None = None) -> str | None:
        value = self.raw(name)
        return default if value is None else value

    def bool(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ImproperlyConfigured(f"{name}={value!r} is not a boolean; use one of true/false, 1/0, yes/no, on/off")

    def int(self, name: str, default: int, *, minimum: int | None = None) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            parsed = int(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None
        if minimum is not None and parsed < minimum:
            raise ImproperlyConfigured(f"{name}={parsed} must be at least {minimum}")
        return parsed

    def float(self, name: str, default: float, *, minimum: float | None = None) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            parsed = float(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={value!r} is not a number") from None
        if minimum is not None and parsed < minimum:
            raise ImproperlyConfigured(f"{name}={parsed} must be at least {minimum}")
        return parsed

    def list(self, name: str, default: list[str]) -> list[str]:
        value = self.raw(name)
        if value is None:
            return list(default)
        items = [item.strip() for item in value.split(",")]
        if any(not item for item in items):
            raise ImproperlyConfigured(f"{name}={value!r} has an empty item in its comma-separated list")
        return items

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.raw(name)
        if value is None:
            return default
        if value not in choices:
            raise ImproperlyConfigured(f"{name}={value!r} must be one of: {', '.join(choices)}")
        return value

    def url(self, name: str, schemes: tuple[str, ...], default: str | None = None) -> str | None:
        value = self.raw(name)
        if value is None:
            return default
        parsed = urlparse(value)
        if parsed.scheme not in schemes:
            raise ImproperlyConfigured(f"{name}={_redact(value)!r} must be a URL with scheme {' or '.join(schemes)}")
        if parsed.scheme in ("http", "https") and not parsed.netloc:
            raise ImproperlyConfigured(f"{name}={value!r} has no host")
        return value

    def rate(self, name: str, default: str) -> str:
        """A request rate such as ``120/min``: a positive count per s, min, hour or day."""
        value = self.raw(name)
        if value is None:
            return default
        count, _, period = value.partition("/")
        if not (count.isdigit() and int(count) > 0 and period in _RATE_PERIODS):
            raise ImproperlyConfigured(
                f"{name}={value!r} is not a rate; write COUNT/PERIOD with PERIOD one of {', '.join(_RATE_PERIODS)}"
            )
        return value

    def country(self, name: str, default: str = "") -> str:
        """An ISO 3166 country code phone numbers know (``KE``), upper case; "" when unset."""
        value = self.raw(name)
        if not value:
            return default
        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ImproperlyConfigured(f"{name}={value!r} is not a country code such as KE, GB or US (ISO 3166)")
        return value.upper()

    def timezone(self, name: str, default: str) -> str:
        value = self.raw(name)
        if value is None:
            return default
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ImproperlyConfigured(f"{name}={value!r} is not an IANA time zone such as Europe/Paris") from None
        return value


def _redact(url: str) -> str:
    """Hide a password embedded in a URL before it reaches an error message."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(parsed.password, "***")
    return url


def read_env_file(path) -> dict[str, str]:
    """Read KEY=VALUE lines (as written by config.embedded) into a dict."""
    values: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    key, _, value = line.partition("=")
                    values[key.strip()] = value.strip()
    except FileNotFoundError:
        pass
    return values
