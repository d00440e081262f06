"""Security headers: a strict Content-Security-Policy the pages satisfy, no framing, HSTS in production."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent.parent
POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
}


def _policy(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in header.split(";") if part.strip())


def _inline_code(html: str) -> list[str]:
    """What the policy would refuse: inline <script> and <style> blocks, on* handlers, javascript: URLs."""
    found = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>\s*\S", html)
    found += re.findall(r"<style[^>]*>", html)
    found += re.findall(r"\son[a-z]+\s*=", html)
    found += re.findall(r"javascript:", html)
    return found


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        "/admin/audience/contact/",
        "/admin/audience/contact/import/",
        "/admin/audience/contact/add/",
        "/admin/campaigns/campaign/",
        "/api/docs/",
    ],
)
def test_pages_carry_the_policy_and_contain_nothing_it_refuses(staff_client, path):
    response = staff_client.get(path)
    assert response.status_code == 200
    assert _policy(response) == POLICY
    assert response["X-Frame-Options"] == "DENY"
    assert _inline_code(response.content.decode()) == []


def test_the_api_docs_load_their_start_up_script_as_a_file(staff_client):
    page = staff_client.get("/api/docs/").content.decode()
    script_url = re.search(r'<script src="(/api/docs/\?[^"]*script[^"]*)"', page).group(1).replace("&amp;", "&")
    script = staff_client.get(script_url)
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.content.decode()


def test_the_login_page_satisfies_the_policy(client):
    response = client.get("/admin/login/")
    assert _policy(response)["form-action"] == "'self'"
    assert _inline_code(response.content.decode()) == []


def test_production_sends_hsts_and_redirects_to_https():
    environ = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": "a-real-secret-key-with-enough-entropy-0123456789abcdef",
        "PHONE_HASH_KEY": "a-real-phone-hash-key-with-enough-entropy-0123",
        "ALLOWED_HOSTS": "messaging.example.com",
    }
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_SSL_REDIRECT, s.X_FRAME_OPTIONS)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**environ, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-4:] == ["31536000", "True", "True", "DENY"]
