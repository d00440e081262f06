"""Real-browser tests: Playwright drives Debian's chromium against pytest-django's live server.

No browser is downloaded (``playwright install`` is never run): the system chromium is launched
headless. Every test saves screenshots under artifacts/screenshots/ at desktop width and at 375 px.
Deselect them with ``-m "not browser"``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(settings.BASE_DIR) / "artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
# The policy the platform is meant to send; the analyst pages are checked against it.
STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'"
)
CSP_CHECKED_PATHS = ("/reporting/", "/accounts/")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "browser: drives a real chromium through Playwright (deselect: -m 'not browser')"
    )


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def browser(django_db_setup):
    """One chromium per module, started after the test database exists and stopped with the module.

    Playwright's sync API keeps an event loop running in this thread while it is open, and the
    tests' ORM calls are synchronous: Django's async guard is lifted only for that span, so the rest
    of the suite (and the subprocesses it starts) keep it.
    """
    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    patch = pytest.MonkeyPatch()
    patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
            )
            yield chromium
            chromium.close()
    finally:
        patch.undo()


class Page:
    """A Playwright page that records CSP violations and page errors, and takes the screenshots."""

    def __init__(self, page, base_url: str):
        self.page = page
        self.base_url = base_url
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))

    def _console(self, message) -> None:
        text = message.text
        if message.type == "error" and ("Content Security Policy" in text or "Refused to" in text):
            where = message.location or {}
            self.problems.append(f"{page_url(where)}: {text}")

    def goto(self, path: str):
        return self.page.goto(self.base_url + path)

    def screenshot(self, name: str) -> None:
        """Full-page screenshots at desktop width and at 375 px; the page must not scroll sideways on a phone."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.set_viewport_size(DESKTOP)
        self.page.wait_for_timeout(300)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}-desktop.png"), full_page=True)
        self.page.set_viewport_size(PHONE)
        self.page.wait_for_timeout(500)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}-375.png"), full_page=True)
        overflow = self.page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        self.page.set_viewport_size(DESKTOP)
        assert overflow <= 1, f"{name}: the page scrolls sideways at 375 px ({overflow} px)"


def page_url(location: dict) -> str:
    return f"{location.get('url', '?')}:{location.get('lineNumber', '?')}:{location.get('columnNumber', '?')}"


def _add_strict_csp(route) -> None:
    if route.request.method != "GET":
        route.continue_()
        return
    response = route.fetch(max_redirects=0)
    headers = {**response.headers, "content-security-policy": STRICT_CSP}
    route.fulfill(response=response, headers=headers)


@pytest.fixture
def page(browser, live_server, request):
    request.getfixturevalue("roles")  # the role groups, flushed by every transactional test before
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    context.set_default_timeout(15_000)
    # The analyst pages are served here under the strict policy, whatever the settings send.
    context.route(
        lambda url: any(part in url for part in CSP_CHECKED_PATHS) and not url.endswith((".js", ".css")),
        _add_strict_csp,
    )
    wrapped = Page(context.new_page(), live_server.url)
    yield wrapped
    context.close()


def sign_in(page: Page, username: str, password: str, next_path: str = "/reporting/") -> None:
    page.goto(next_path)
    page.page.get_by_label("Username").fill(username)
    page.page.get_by_label("Password").fill(password)
    page.page.get_by_role("button", name="Sign in").click()
    page.page.wait_for_url(f"**{next_path}")


# --- A Celery worker on the test database, for the tests that need background work ------------


def _database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    socket_dir = (db.get("OPTIONS") or {}).get("host")
    if not db["HOST"] and socket_dir:
        return f"postgres://{auth}@/{db['NAME']}?host={socket_dir}"
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def media_dir(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def celery_worker(live_server, media_dir):
    """A `celery worker` subprocess on the live server's database and this test's media folder."""
    from config.celery import app as celery_app

    assert celery_app.conf.broker_url == settings.CELERY_BROKER_URL
    celery_app.control.purge()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "MESSAGING_PROVIDER": "simulated",
        "MEDIA_ROOT": str(media_dir),
        "INGEST_WORKERS": "1",
    }
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "threads", "--concurrency", "4"]
    command += ["--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "warning"]
    command += ["-n", f"browser-{uuid.uuid4().hex[:8]}@%h"]
    process = subprocess.Popen(command, env=env, cwd=settings.BASE_DIR, stdout=subprocess.DEVNULL)
    yield process
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    celery_app.control.purge()


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("timed out waiting")
