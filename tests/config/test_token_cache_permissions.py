"""A remembered API token keeps its user's model permissions too: masking decides without a query."""

import pytest
from django.contrib.auth.models import Group, Permission
from rest_framework.authtoken.models import Token

from config import auth, privacy
from config.roles import STAFF

pytestmark = pytest.mark.django_db


def _authenticate(user):
    key = Token.objects.get_or_create(user=user)[0].key
    return auth.CachedTokenAuthentication().authenticate_credentials(key)[0]


def test_a_remembered_users_permission_to_see_phones_costs_no_query(staff_user, django_assert_num_queries):
    key = Token.objects.create(user=staff_user).key
    auth.CachedTokenAuthentication().authenticate_credentials(key)
    with django_assert_num_queries(0):
        user, _ = auth.CachedTokenAuthentication().authenticate_credentials(key)
        assert privacy.can_see_full_phones(user)


def test_a_withdrawn_permission_takes_effect_once_the_memory_expires(staff_user, settings, monkeypatch):
    assert privacy.can_see_full_phones(_authenticate(staff_user))
    Group.objects.get(name=STAFF).permissions.remove(Permission.objects.get(codename="see_full_phone"))
    assert privacy.can_see_full_phones(_authenticate(staff_user))  # within API_TOKEN_CACHE_SECONDS
    now = auth.time.monotonic()
    monkeypatch.setattr(auth.time, "monotonic", lambda: now + settings.API_TOKEN_CACHE_SECONDS + 1)
    assert not privacy.can_see_full_phones(_authenticate(staff_user))


def test_each_request_gets_its_own_copy_of_the_remembered_user(staff_user):
    first, second = _authenticate(staff_user), _authenticate(staff_user)
    first.backend = "set by one request"
    assert first is not second and not hasattr(second, "backend")
