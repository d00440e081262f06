"""Admin pages the strict CSP (script-src 'self'; style-src 'self') would break: no inline script or style."""

import re
from pathlib import Path

import pytest

from messaging.models import MessageTemplate
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", re.I)
INLINE_STYLE = re.compile(r"\sstyle=\"", re.I)


@pytest.fixture
def superuser_client(client):
    client.force_login(UserFactory(username="root", is_superuser=True))
    return client


def test_celery_beats_periodic_task_page_runs_no_inline_script(superuser_client):
    page = superuser_client.get("/admin/django_celery_beat/periodictask/add/").content.decode()
    assert 'id="readable-crontabs"' in page and "backoffice/crontab_help.js" in page
    assert not INLINE_SCRIPT.search(page)


def test_the_template_preview_has_no_inline_style(superuser_client):
    template = MessageTemplate.objects.create(name="hello", channel="sms", body="Hello {{ name }}")
    response = superuser_client.get(f"/admin/messaging/messagetemplate/{template.pk}/preview/")
    assert response.status_code == 200
    assert not INLINE_STYLE.search(response.content.decode())
    source = (
        Path(__file__).parent.parent.parent / "messaging/templates/admin/messaging/messagetemplate/preview.html"
    ).read_text()
    assert "template-preview-text" in source and not INLINE_STYLE.search(source)
