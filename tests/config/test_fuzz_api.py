"""Fuzzing the API against its own OpenAPI schema with schemathesis (`make fuzz`, not `make test`).

Every operation of /api/schema/ gets FUZZ_EXAMPLES generated requests (valid and invalid) through
the WSGI app on PostgreSQL, as a Staff user with a token. Checks: no 5xx, and every response
matches the schema (status-code body schema, content type, documented headers). Each problem it
found is kept as a plain test in tests/config/test_fuzz_regressions.py.
"""

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)

from config.roles import STAFF
from config.wsgi import application
from tests.factories import UserFactory

pytestmark = [
    pytest.mark.skipif(not os.environ.get("FUZZ"), reason="API fuzzing runs in `make fuzz`"),
    pytest.mark.django_db,
]

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, response_headers_conformance]
REPORT = Path(os.environ.get("FUZZ_REPORT", "var/fuzz-report.json"))
TALLY: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(dict(TALLY), sort_keys=True, indent=1))


@pytest.fixture
def staff_token(db, settings):
    # Fuzzing sends far more than a client would: the throttles are not what is under test here.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": []}
    settings.ALLOWED_HOSTS = ["*"]
    user = UserFactory(username="fuzzer", role=STAFF)
    return Token.objects.create(user=user).key


@pytest.fixture
def keep_connection():
    """Django's test client does the same: the WSGI handler would close the test's transaction."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _load_schema():
    """The schema /api/schema/ serves, generated in-process (collection needs it before any request)."""
    generator = SchemaGenerator()
    raw = json.loads(OpenApiJsonRenderer().render(generator.get_schema(request=None, public=True)))
    loaded = schemathesis.openapi.from_dict(raw)
    loaded.app = application
    return loaded


SCHEMA = _load_schema() if os.environ.get("FUZZ") else None
OPERATIONS = (
    [(op.ok().method.upper(), op.ok().path) for op in SCHEMA.get_all_operations()] if SCHEMA is not None else []
)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_api_conforms_to_its_schema(method, path, mode, staff_token, keep_connection):
    operation = SCHEMA[path][method]
    headers = {"Authorization": f"Token {staff_token}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def run(case):
        response = case.call(headers=headers)
        TALLY["requests"] += 1
        TALLY[f"status_{response.status_code // 100}xx"] += 1
        checks = CHECKS if mode == GenerationMode.POSITIVE else [not_a_server_error]
        case.validate_response(response, checks=checks, headers=headers)

    TALLY["operations"] += mode == GenerationMode.POSITIVE
    try:
        run()
    except Unsatisfiable:  # nothing to make invalid (no parameters, no body): the valid run covers it
        assert mode == GenerationMode.NEGATIVE
        TALLY["not_negatable"] += 1
