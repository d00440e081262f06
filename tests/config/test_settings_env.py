import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import Env

ROOT = Path(__file__).resolve().parent.parent.parent


def test_booleans_accept_the_usual_spellings():
    env = Env({"A": "true", "B": "0", "C": " Yes "})
    assert env.bool("A", False) is True
    assert env.bool("B", True) is False
    assert env.bool("C", False) is True
    assert env.bool("MISSING", True) is True


@pytest.mark.parametrize(
    ("method", "args", "value", "fragment"),
    [
        ("bool", (False,), "maybe", "DEBUG='maybe' is not a boolean"),
        ("int", (5,), "five", "DEBUG='five' is not an integer"),
        ("timezone", ("UTC",), "Mars/Olympus", "is not an IANA time zone"),
        ("choice", (("twilio", "simulated"), "simulated"), "smoke", "must be one of: twilio, simulated"),
        ("url", (("redis", "unix"),), "http://x", "must be a URL with scheme redis or unix"),
        ("list", ([],), "a,,b", "has an empty item"),
    ],
)
def test_a_bad_value_is_refused_with_the_variable_named(method, args, value, fragment):
    env = Env({"DEBUG": value})
    with pytest.raises(ImproperlyConfigured, match="DEBUG") as raised:
        getattr(env, method)("DEBUG", *args)
    assert fragment in str(raised.value)


def test_url_errors_never_print_a_password():
    env = Env({"DATABASE_URL": "mysql://user:hunter2@db/x"})
    with pytest.raises(ImproperlyConfigured) as raised:
        env.url("DATABASE_URL", schemes=("postgres",))
    assert "hunter2" not in str(raised.value)


def _check(deploy: bool = False, **overrides):
    environ = {**os.environ, **overrides}
    command = [sys.executable, "manage.py", "check", *(["--deploy", "--fail-level", "WARNING"] if deploy else [])]
    return subprocess.run(command, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DEBUG", "perhaps", "DEBUG='perhaps' is not a boolean"),
        ("DEFAULT_TIMEZONE", "Nowhere/City", "DEFAULT_TIMEZONE='Nowhere/City' is not an IANA time zone"),
        ("MESSAGING_PROVIDER", "carrier-pigeon", "MESSAGING_PROVIDER='carrier-pigeon' must be one of"),
        ("DATABASE_URL", "sqlite:///db.sqlite3", "DATABASE_URL"),
        ("TWILIO_ACCOUNT_SID", "XX123", "TWILIO_ACCOUNT_SID must be 34 characters"),
        ("DELIVERY_UNKNOWN_GIVE_UP_MINUTES", "0", "DELIVERY_UNKNOWN_GIVE_UP_MINUTES=0 must be at least 1"),
        ("DELIVERY_UNKNOWN_GIVE_UP_MINUTES", "1h", "DELIVERY_UNKNOWN_GIVE_UP_MINUTES='1h' is not an integer"),
    ],
)
def test_start_up_stops_on_a_bad_variable(variable, value, message):
    result = _check(**{variable: value})
    assert result.returncode != 0
    assert message in result.stderr


def test_production_needs_a_secret_key():
    result = _check(DEBUG="false", SECRET_KEY="", ALLOWED_HOSTS="example.com")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is false" in result.stderr


@pytest.mark.parametrize(
    "key",
    [
        "k" * 31 + "-0123456789abcdef",  # 48 characters: passed the old 32-character rule, fails check --deploy
        "a1b2" * 15,  # 60 characters but only 4 different ones
        "django-insecure-" + "0123456789abcdefghijklmnopqrstuvwxyzABCDEF",  # made by startproject
    ],
)
def test_production_refuses_a_secret_key_check_deploy_would_warn_about(key):
    result = _check(DEBUG="false", SECRET_KEY=key, ALLOWED_HOSTS="example.com")
    assert result.returncode != 0
    assert "SECRET_KEY must be at least 50 characters long, with at least 5 different ones" in result.stderr
    assert key not in result.stderr


def test_a_secret_key_of_exactly_50_characters_starts_and_passes_check_deploy():
    key = "0123456789abcdefghijklmnopqrstuvwxyz-_ABCDEFGHIJKL"
    assert len(key) == 50
    phone_key = "a-phone-hash-key-for-this-test-0123456789abcdef"
    result = _check(DEBUG="false", SECRET_KEY=key, PHONE_HASH_KEY=phone_key, ALLOWED_HOSTS="example.com", deploy=True)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_deploy_check_is_clean_in_production_mode():
    environ = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": "a-real-secret-key-with-enough-entropy-0123456789abcdef",
        "PHONE_HASH_KEY": "a-real-phone-hash-key-with-enough-entropy-0123",
        "ALLOWED_HOSTS": "messaging.example.com",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_defaults_are_utc_and_the_simulated_provider_when_unset():
    environ = {k: v for k, v in os.environ.items() if k not in ("DEFAULT_TIMEZONE", "MESSAGING_PROVIDER")}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; "
            "print(settings.DEFAULT_TIMEZONE, settings.MESSAGING_PROVIDER, settings.CELERY_BROKER_URL)",
        ],
        cwd=ROOT,
        env={**environ, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    timezone, provider, broker = result.stdout.split()
    assert (timezone, provider) == ("UTC", "simulated")
    assert broker.startswith(("redis://", "redis+socket://"))
