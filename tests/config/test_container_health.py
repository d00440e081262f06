"""The image's and compose's health checks get 200 from Django under the compose defaults.

Docker does not run here, so the test reads the health command from docker-compose.yml and the
Dockerfile, builds the request the probe sends from the compose environment's defaults, and asks
Django configured by that same environment (in a process of its own) how it would answer.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import yaml
from django.db import connection

from config import healthcheck

ROOT = Path(__file__).resolve().parent.parent.parent
PROBE = ["python", "config/healthcheck.py"]
_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<how>:-|:\?)(?P<word>[^}]*))?\}")


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _dockerfile_healthcheck() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    [line] = [line for line in text.splitlines() if line.startswith("HEALTHCHECK")]
    return json.loads(line.split(" CMD ", 1)[1])


def _compose_defaults(environment: dict[str, str], required: dict[str, str]) -> dict[str, str]:
    """The web service's environment as compose fills it with no variables set (``:?`` ones from ``required``)."""

    def fill(match: re.Match) -> str:
        if match["how"] == ":?":
            return required[match["name"]]
        return match["word"] or ""

    return {name: _INTERPOLATION.sub(fill, str(value)) for name, value in environment.items()}


def test_the_image_and_compose_run_the_same_probe():
    web = _compose()["services"]["web"]
    assert web["healthcheck"]["test"] == ["CMD", *PROBE]
    assert _dockerfile_healthcheck() == PROBE
    assert (ROOT / PROBE[1]).is_file()


@pytest.mark.parametrize(
    ("allowed_hosts", "host"),
    [(None, "localhost"), ("localhost", "localhost"), ("sms.example.com,localhost", "sms.example.com")]
    + [(".example.com", "example.com"), ("*", "localhost")],
)
def test_the_probe_names_a_host_allowed_hosts_accepts(allowed_hosts, host):
    environ = {} if allowed_hosts is None else {"ALLOWED_HOSTS": allowed_hosts}
    request = healthcheck.probe_request(environ)
    assert request.get_header("Host") == host
    assert request.full_url == "http://127.0.0.1:8000/health/"


@pytest.mark.django_db
@pytest.mark.skipif(
    os.environ.get("EMBEDDED_DATABASE") == "1",
    reason="the probe runs in a subprocess on the compose settings, which the embedded servers' sockets do not fit; "
    "run with DATABASE_URL naming a server (CI does)",
)
def test_django_under_the_compose_defaults_answers_the_probe_with_200():
    secret = "compose-test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"
    required = {"SECRET_KEY": secret, "PHONE_HASH_KEY": "compose-test-phone-hash-key-0123456789abcdef"}
    environ = _compose_defaults(_compose()["services"]["web"]["environment"], required)
    assert environ["ALLOWED_HOSTS"] == "localhost" and environ["DEBUG"] == "false"
    request = healthcheck.probe_request(environ)
    path, host = urlsplit(request.full_url).path, request.get_header("Host")

    # The compose servers' names do not resolve here: the same settings, pointed at this test's servers.
    db = connection.settings_dict
    environ["DATABASE_URL"] = (
        f"postgres://{quote(db['USER'])}:{quote(db['PASSWORD'] or '')}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    environ["REDIS_URL"] = os.environ["REDIS_URL"]
    ask = (
        "import django, json; django.setup(); from django.test import Client; "
        f"print(json.dumps([[Client().get({path!r}, HTTP_HOST=h).status_code] for h in ({host!r}, '127.0.0.1')]))"
    )
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    result = subprocess.run(
        [sys.executable, "-c", ask],
        cwd=ROOT,
        env={**keep, **environ, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    probed, old_probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probed == [200]
    assert old_probe == [400]  # what the probe got when it sent Host 127.0.0.1: Django refuses unlisted hosts


def test_compose_app_services_share_no_disk_and_keep_import_files_in_the_bucket():
    services = _compose()["services"]
    apps = [name for name, service in services.items() if service.get("build") == "."]
    assert {"web", "worker", "beat", "migrate"} <= set(apps)
    assert all(not services[name].get("volumes") for name in apps)  # nothing written to a shared path
    environ = _compose_defaults(services["worker"]["environment"], {"SECRET_KEY": "s", "PHONE_HASH_KEY": "p"})
    assert environ["S3_BUCKET"] and environ["S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "healthcheck" in services["minio"] and services["minio-bucket"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["minio-bucket"] == {"condition": "service_completed_successfully"}
