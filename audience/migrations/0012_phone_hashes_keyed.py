"""Phone hashes become keyed, and import row problems stop quoting the phone in their reason.

The suppression list and the consent audit held the plain SHA-256 of each phone, which anyone
with a copy of the table can reverse by hashing every possible number. Each stored digest is
replaced by HMAC-SHA256(PHONE_HASH_KEY, digest), the hash ``audience.phones.phone_hash`` now
computes, so no phone is needed to convert them. Not reversible: the plain digests are gone.

Duplicate-row warnings of earlier imports said "(same phone +1415…)"; the phone is cut from them
(the cell itself is in ``value``, which an erasure blanks).

Self-contained on purpose (a migration must not change when the code it once called does).
"""

import hashlib

from django.conf import settings
from django.db import migrations

DUPLICATE_REASON = r"^(duplicate of line \d+) \(same phone [^)]*\)"


def _pads() -> tuple[str, str]:
    """HMAC-SHA256's inner and outer keys (RFC 2104), hex."""
    key = settings.PHONE_HASH_KEY.encode("utf-8")
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in key).hex(), bytes(b ^ 0x5C for b in key).hex()


def hashes_key(apps, schema_editor):
    inner, outer = _pads()
    keyed = (
        "encode(sha256(decode(%(outer)s, 'hex') || "
        "sha256(decode(%(inner)s, 'hex') || convert_to(phone_hash, 'UTF8'))), 'hex')"
    )
    with schema_editor.connection.cursor() as cursor:
        for table in ("audience_suppression", "audience_consentevent"):
            cursor.execute(f"UPDATE {table} SET phone_hash = {keyed}", {"inner": inner, "outer": outer})
        cursor.execute(
            r"UPDATE audience_importrowerror SET reason = regexp_replace(reason, %s, '\1 (same phone)') "
            "WHERE reason ~ %s",
            [DUPLICATE_REASON, DUPLICATE_REASON],
        )


class Migration(migrations.Migration):
    dependencies = [("audience", "0011_imports_resume_schedule")]

    operations = [migrations.RunPython(hashes_key, elidable=False)]
