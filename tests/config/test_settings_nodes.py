"""Settings for several machines: where import files go (S3_*), and what sits between the platform and PostgreSQL."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nodes import database_url

ROOT = Path(__file__).resolve().parent.parent.parent
SHOW = (
    "import django, json; django.setup(); from django.conf import settings; "
    "db = settings.DATABASES['default']; "
    "print(json.dumps({'storage': settings.STORAGES['default'], 'options': db['OPTIONS'], "
    "'max_age': db['CONN_MAX_AGE'], 'no_cursors': db.get('DISABLE_SERVER_SIDE_CURSORS', False), "
    "'prepared': settings.DATABASE_PREPARED_STATEMENTS}))"
)


def _settings(code: str = SHOW, **overrides) -> subprocess.CompletedProcess:
    environ = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", **overrides}
    for name in [name for name, value in overrides.items() if value is None]:
        environ.pop(name)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120
    )


def _shown(**overrides) -> dict:
    result = _settings(**overrides)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_a_bucket_import_files_stay_on_this_machine_and_connections_are_persistent():
    shown = _shown(S3_BUCKET=None, DATABASE_POOLER=None, DATABASE_PREPARED_STATEMENTS=None, DB_CONN_MAX_AGE=None)
    assert shown["storage"] == {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    assert shown["max_age"] == 600 and "pool" not in shown["options"] and shown["prepared"] is True
    assert shown["no_cursors"] is False


def test_a_bucket_is_configured_from_the_environment():
    shown = _shown(
        S3_BUCKET="contacts",
        S3_ENDPOINT_URL="http://minio:9000",
        S3_ACCESS_KEY_ID="key",
        S3_SECRET_ACCESS_KEY="secret",
        S3_REGION="eu-west-1",
        S3_PREFIX="/platform/",
    )
    assert shown["storage"]["BACKEND"] == "storages.backends.s3.S3Storage"
    options = shown["storage"]["OPTIONS"]
    assert (options["bucket_name"], options["endpoint_url"], options["region_name"]) == (
        "contacts",
        "http://minio:9000",
        "eu-west-1",
    )
    assert (options["access_key"], options["secret_key"], options["location"]) == ("key", "secret", "platform")
    assert options["addressing_style"] == "path" and options["default_acl"] is None  # MinIO's way, private


def test_on_aws_the_keys_may_come_from_the_role_and_the_bucket_is_addressed_by_host():
    options = _shown(S3_BUCKET="contacts", S3_ENDPOINT_URL=None, S3_ACCESS_KEY_ID=None, S3_SECRET_ACCESS_KEY=None)[
        "storage"
    ]["OPTIONS"]
    assert options["access_key"] is None and options["addressing_style"] == "auto"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"S3_BUCKET": "b", "S3_ACCESS_KEY_ID": "key"}, "S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY go together"),
        ({"S3_BUCKET": None, "S3_ENDPOINT_URL": "http://minio:9000"}, "need S3_BUCKET"),
        ({"S3_BUCKET": "b", "S3_ENDPOINT_URL": "minio:9000"}, "S3_ENDPOINT_URL"),
        ({"DATABASE_POOLER": "pgpool"}, "DATABASE_POOLER='pgpool' must be one of: none, pgbouncer, django"),
        ({"DATABASE_POOLER": "django", "DATABASE_POOL_MIN_SIZE": "9", "DATABASE_POOL_MAX_SIZE": "4"}, "MIN_SIZE"),
    ],
)
def test_a_bad_combination_stops_start_up_naming_it(overrides, message):
    result = _settings("import django; django.setup()", **overrides)
    assert result.returncode != 0 and message in result.stderr


def test_pgbouncer_turns_off_prepared_statements_and_server_side_cursors():
    shown = _shown(DATABASE_POOLER="pgbouncer", DATABASE_PREPARED_STATEMENTS=None)
    assert shown["prepared"] is False and shown["options"]["prepare_threshold"] is None
    assert shown["no_cursors"] is True and shown["max_age"] == 600  # client connections to the pooler persist


@pytest.mark.django_db
def test_django_pool_serves_queries_from_a_pool_of_the_configured_size():
    code = (
        "import django, json; django.setup(); from django.db import connection; "
        "from django.contrib.auth.models import User; User.objects.count(); "
        "pool = connection.pool; "
        "print(json.dumps([pool.min_size, pool.max_size, connection.settings_dict['CONN_MAX_AGE'],"
        " pool.get_stats().get('connections_num', 0)]))"
    )
    result = _settings(
        code,
        DATABASE_URL=database_url(),
        DATABASE_POOLER="django",
        DATABASE_POOL_MIN_SIZE="1",
        DATABASE_POOL_MAX_SIZE="3",
    )
    assert result.returncode == 0, result.stderr
    min_size, max_size, max_age, opened = json.loads(result.stdout.strip().splitlines()[-1])
    assert (min_size, max_size, max_age) == (1, 3, 0) and opened >= 1
