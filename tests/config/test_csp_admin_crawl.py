"""Every admin page, the project's own and third-party ones, holds no inline script or style.

The Content-Security-Policy allows scripts and styles from the platform's own origin only
(`script-src 'self'; style-src 'self'`): an inline one would be blocked in the browser.
"""

import re

import pytest
from django.contrib import admin
from django.test import RequestFactory
from django.urls import reverse

from tests import factories

pytestmark = pytest.mark.django_db

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", re.I)
INLINE_STYLE = re.compile(r"<style\b|\sstyle=\"", re.I)
INLINE_HANDLER = re.compile(r"\son(click|change|load|submit|input)=\"", re.I)


def admin_pages():
    request = RequestFactory().get("/admin/")
    request.user = factories.UserFactory.build(username="crawler", is_superuser=True, is_active=True)
    for model, model_admin in admin.site._registry.items():
        name = f"{model._meta.app_label}_{model._meta.model_name}"
        yield f"{name}:changelist", reverse(f"admin:{name}_changelist")
        if model_admin.has_add_permission(request):
            yield f"{name}:add", reverse(f"admin:{name}_add")


@pytest.fixture
def superuser_client(client):
    client.force_login(factories.UserFactory(username="root", is_superuser=True))
    return client


@pytest.fixture
def data():
    """One row of each kind the back office shows, so change pages and lists have something to draw."""
    factories.RecipientFactory()
    factories.ProviderCallbackFactory()
    factories.EventFactory()
    factories.ImportJobFactory()
    factories.SegmentFactory()


def assert_csp_clean(page: str, where: str) -> None:
    for pattern in (INLINE_SCRIPT, INLINE_STYLE, INLINE_HANDLER):
        found = pattern.search(page)
        assert not found, f"{where}: {page[max(0, found.start() - 120) : found.end() + 120]!r}"


def test_the_crawl_sees_the_third_party_pages():
    names = {name for name, _ in admin_pages()}
    assert "django_celery_beat_periodictask:add" in names and "campaigns_campaign:changelist" in names


@pytest.mark.usefixtures("data")
def test_every_admin_list_add_and_change_page_is_csp_clean(superuser_client):
    visited, changes = 0, 0
    for name, url in [("index", "/admin/"), *admin_pages()]:
        response = superuser_client.get(url)
        assert response.status_code == 200, f"{name}: {response.status_code}"
        page = response.content.decode()
        assert_csp_clean(page, name)
        visited += 1
        for link in re.findall(r'href="(/admin/[\w_]+/[\w_]+/\d+/change/)"', page)[:1]:
            change = superuser_client.get(link)
            assert change.status_code == 200, f"{link}: {change.status_code}"
            assert_csp_clean(change.content.decode(), link)
            changes += 1
    assert visited > 30 and changes > 10


def test_the_crawl_catches_an_inline_style():
    with pytest.raises(AssertionError, match="somewhere"):
        assert_csp_clean('<p style="color: red">', "somewhere")
