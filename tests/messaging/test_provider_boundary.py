"""Twilio is known in one place: messaging/providers/twilio/. The rest speaks the platform's words."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from messaging.models import MessageStatus
from messaging.providers import (
    THROTTLE_CODES,
    ErrorKind,
    UnknownStatus,
    error_kind,
    error_meaning,
    status_for,
)
from messaging.providers.twilio import codes

ROOT = Path(__file__).resolve().parent.parent.parent
PRODUCT = ("audience", "messaging", "campaigns", "reporting", "config")
TWILIO_HOME = ROOT / "messaging" / "providers" / "twilio"


def product_modules():
    for app in PRODUCT:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts or TWILIO_HOME in path.parents:
                continue
            yield path


def test_the_scan_sees_the_product():
    names = {path.relative_to(ROOT).as_posix() for path in product_modules()}
    assert "campaigns/services/dispatch.py" in names and "reporting/selectors.py" in names
    assert not any(name.startswith("messaging/providers/twilio/") for name in names)
    # The fake Twilio server is a test double and lives with the tests, outside the product.
    assert not (ROOT / "messaging" / "fake_twilio").exists()


@pytest.mark.parametrize("path", list(product_modules()), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_no_module_outside_the_twilio_package_imports_twilio_or_names_its_codes(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not any(alias.name.split(".")[0] == "twilio" for alias in node.names), f"line {node.lineno}"
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            assert (node.module or "").split(".")[0] != "twilio", f"line {node.lineno} imports twilio"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert node.value not in codes.ERRORS, f"line {node.lineno} names Twilio code {node.value!r}"


def test_statuses_come_out_in_the_platforms_words():
    assert status_for("Delivered") == MessageStatus.DELIVERED
    assert status_for("partially_delivered") == MessageStatus.DELIVERED
    with pytest.raises(UnknownStatus):
        status_for("teleported")


def test_error_codes_come_out_as_kinds_and_meanings():
    assert error_kind("21610") == ErrorKind.OPTED_OUT
    assert error_kind("63016") == ErrorKind.OUTSIDE_WINDOW
    assert error_kind("20429") == ErrorKind.RETRYABLE
    assert error_kind("30007") == ErrorKind.PERMANENT
    assert error_kind("99999") == ErrorKind.PERMANENT
    assert {"429", "20429", "63018"} <= THROTTLE_CODES and "30007" not in THROTTLE_CODES
    assert error_meaning("21408") == "No permission to send an SMS to that region"
    assert error_meaning("unknown").startswith("Delivery unknown")
    assert "99999" in error_meaning("99999")
