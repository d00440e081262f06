"""Abuse protection: admin login lockout, API throttling per token, upload size limits."""

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile

from audience.models import ImportJob
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/"
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def admin_user():
    user = UserFactory(username="boss", is_staff=True, is_superuser=True)
    user.set_password(PASSWORD)
    user.save()
    return user


def _login(client, username, password, ip="10.0.0.1"):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=ip)


def test_a_few_failures_then_success_still_log_in(client, admin_user, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, "boss", "wrong")
    assert _login(client, "boss", PASSWORD).status_code == 302


@pytest.fixture
def low_rates(settings):
    cache.clear()
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"read": "3/min", "write": "2/min"}}
    yield
    cache.clear()


def test_reads_past_the_rate_get_429_with_retry_after(staff_api, low_rates):
    codes = [staff_api.get("/api/v1/topics/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    response = staff_api.get("/api/v1/topics/")
    assert 0 < int(response["Retry-After"]) <= 60
    assert "throttled" in response.json()["detail"].lower()


def test_each_token_has_its_own_bucket_and_writes_their_own_rate(staff_api, analyst_api, low_rates):
    for _ in range(3):
        staff_api.get("/api/v1/topics/")
    assert staff_api.get("/api/v1/topics/").status_code == 429
    assert analyst_api.get("/api/v1/topics/").status_code == 200  # another token
    writes = [staff_api.post("/api/v1/topics/", {"name": f"t{n}"}).status_code for n in range(3)]
    assert writes == [201, 201, 429]


def test_an_api_import_over_the_limit_gets_413_naming_it(staff_api, settings, media_root):  # noqa: F811
    settings.IMPORT_MAX_BYTES = 2048
    big = SimpleUploadedFile("big.csv", b"phone\n" + b"+254712345678\n" * 400, content_type="text/csv")
    response = staff_api.post("/api/v1/contacts/import", {"file": big}, format="multipart")
    assert response.status_code == 413
    assert "2048 bytes (IMPORT_MAX_BYTES)" in response.json()["detail"]
    assert not ImportJob.objects.exists()


def test_an_api_import_within_the_limit_is_accepted(staff_api, settings, media_root):  # noqa: F811
    settings.IMPORT_MAX_BYTES = 4096
    small = SimpleUploadedFile("small.csv", b"phone\n+254712345678\n", content_type="text/csv")
    upload = {"file": small, "default_consent": "opted_in"}
    assert staff_api.post("/api/v1/contacts/import", upload, format="multipart").status_code == 202


def test_an_admin_upload_over_the_limit_is_refused_with_the_limit(client, admin_user, settings, media_root):  # noqa: F811
    settings.IMPORT_MAX_BYTES = 2048
    client.force_login(admin_user)
    big = SimpleUploadedFile("big.csv", b"phone\n" + b"+254712345678\n" * 400, content_type="text/csv")
    response = client.post(
        "/admin/audience/contact/import/",
        {"import_file": big, "resource": "0", "default_consent": "opted_in"},
    )
    assert response.status_code == 200
    assert "the limit is 2048 bytes (IMPORT_MAX_BYTES)" in response.content.decode()
    assert not ImportJob.objects.exists()


def test_a_json_body_over_the_data_upload_limit_is_a_400_not_a_500(staff_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = staff_api.post("/api/v1/topics/", {"name": "x" * 5000, "description": "y"}, format="json")
    assert response.status_code in (400, 413)


@pytest.mark.parametrize("value", ["100", "0/min", "ten/min", "5/fortnight", "-1/s"])
def test_a_bad_throttle_rate_stops_start_up_naming_the_variable(value):
    from django.core.exceptions import ImproperlyConfigured

    from config.env import Env

    with pytest.raises(ImproperlyConfigured, match="API_THROTTLE_READ_RATE"):
        Env({"API_THROTTLE_READ_RATE": value}).rate("API_THROTTLE_READ_RATE", "1/s")
    assert Env({"API_THROTTLE_READ_RATE": "90/min"}).rate("API_THROTTLE_READ_RATE", "1/s") == "90/min"
