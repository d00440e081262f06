import pytest
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from config.roles import ANALYSTS, STAFF, sync_role_permissions
from tests.factories import UserFactory


@pytest.fixture
def staff_user(db):
    return UserFactory(username="staff", role=STAFF)


@pytest.fixture
def analyst_user(db):
    return UserFactory(username="analyst", role=ANALYSTS)


def _token_client(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def staff_api(staff_user):
    return _token_client(staff_user)


@pytest.fixture
def analyst_api(analyst_user):
    return _token_client(analyst_user)


@pytest.fixture
def anon_api():
    return APIClient()


@pytest.fixture(autouse=True)
def _api_token_cache_empty():
    """Each test starts with no remembered API tokens (config/auth.py)."""
    from config.auth import token_cache_clear

    token_cache_clear()
    yield
    token_cache_clear()


@pytest.fixture
def roles(transactional_db):
    """The two role groups: a transactional test flushes the rows their data migration made."""
    for name in (STAFF, ANALYSTS):
        Group.objects.get_or_create(name=name)
    sync_role_permissions()


@pytest.fixture
def media_root(settings, tmp_path):
    """Uploaded import files go to a temporary MEDIA_ROOT, not the project's var/."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT
