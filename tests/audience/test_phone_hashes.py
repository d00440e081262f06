"""Phone hashes kept after erasure are keyed (HMAC-SHA256 under PHONE_HASH_KEY), in Python and in SQL alike."""

from __future__ import annotations

import hashlib
import hmac
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection, transaction

from audience import services as audience
from audience.ingest import sql
from audience.models import ConsentEvent, ConsentSource, ConsentStatus, ImportJob, ImportRowError, Suppression
from audience.phones import phone_hash, phone_hash_pads
from tests.ingest import ingest, write

ROOT = Path(__file__).resolve().parent.parent.parent
PHONE = "+254722918364"


def _plain(phone: str) -> str:
    return hashlib.sha256(phone.encode()).hexdigest()


def test_the_hash_is_an_hmac_of_the_plain_digest_under_the_configured_key(settings):
    settings.PHONE_HASH_KEY = "k" * 40
    expected = hmac.new(b"k" * 40, _plain(PHONE).encode(), hashlib.sha256).hexdigest()
    assert phone_hash(PHONE) == expected != _plain(PHONE)
    settings.PHONE_HASH_KEY = "another-key-another-key-another-key"
    assert phone_hash(PHONE) != expected  # without the key, no one can recompute it


@pytest.mark.parametrize("key", ["short", "x" * 64, "ü-non-ascii-key-" * 3, "long" * 40])
@pytest.mark.django_db
def test_the_database_computes_the_same_hash_as_python(settings, key):
    settings.PHONE_HASH_KEY = key
    with transaction.atomic(), connection.cursor() as cursor:
        sql.phone_hash_key_set(cursor)
        cursor.execute(f"SELECT {sql.phone_hash('%s')}", [PHONE])
        assert cursor.fetchone()[0] == phone_hash(PHONE)


@pytest.mark.django_db
def test_the_key_stays_out_of_the_statements_that_use_it(settings):
    settings.PHONE_HASH_KEY = "a-secret-key-that-must-not-be-logged"
    statement = sql.mark_suppressed("stage") + sql.phone_hash("phone")
    assert settings.PHONE_HASH_KEY not in statement
    assert not any(pad.hex() in statement for pad in phone_hash_pads())


@pytest.mark.django_db(transaction=True)
def test_an_import_writes_keyed_hashes_and_finds_suppressed_phones_by_them(tmp_path):
    Suppression.objects.create(phone_hash=phone_hash(PHONE), reason="erased", source=ConsentSource.KEYWORD)
    job = ingest(write(tmp_path, "c.csv", f"phone\n{PHONE}\n+254733000111\n"))
    assert job.status == "succeeded"
    events = dict(ConsentEvent.objects.values_list("contact__phone", "phone_hash"))
    assert events == {PHONE: phone_hash(PHONE), "+254733000111": phone_hash("+254733000111")}
    assert ConsentEvent.objects.get(contact__phone=PHONE).to_status == ConsentStatus.OPTED_OUT


@pytest.mark.django_db
def test_the_migration_keys_the_stored_digests_without_the_phones_and_cuts_phones_from_reasons():
    migration = importlib.import_module("audience.migrations.0012_phone_hashes_keyed")
    contact = audience.contact_create(phone=PHONE, consent_status=ConsentStatus.OPTED_OUT)
    ConsentEvent.objects.update(phone_hash=_plain(PHONE))
    Suppression.objects.create(phone_hash=_plain(PHONE), reason="opted out", source=ConsentSource.KEYWORD)
    job = ImportJob.objects.create(source="api", file_path="x.csv", file_name="x.csv")
    old = f"duplicate of line 3 (same phone {PHONE}); the later row wins"
    ImportRowError.objects.create(job=job, line=2, column="phone", level="warning", reason=old, value=PHONE)

    with connection.schema_editor() as editor:
        migration.hashes_key(None, editor)

    assert ConsentEvent.objects.get(contact=contact).phone_hash == phone_hash(PHONE)
    assert Suppression.objects.get().phone_hash == phone_hash(PHONE)
    assert ImportRowError.objects.get().reason == "duplicate of line 3 (same phone); the later row wins"
    assert audience.is_suppressed(PHONE)


def _check(**overrides):
    environ = {**os.environ, "DEBUG": "false", "ALLOWED_HOSTS": "example.com", **overrides}
    environ.setdefault("SECRET_KEY", "a-real-secret-key-with-enough-entropy-0123456789abcdef")
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120
    )


def test_production_refuses_to_start_without_a_phone_hash_key():
    result = _check(PHONE_HASH_KEY="")
    assert result.returncode != 0
    assert "PHONE_HASH_KEY must be set when DEBUG is false" in result.stderr


def test_production_refuses_a_short_phone_hash_key():
    result = _check(PHONE_HASH_KEY="too-short")
    assert result.returncode != 0
    assert "PHONE_HASH_KEY must be at least 32 characters long" in result.stderr
