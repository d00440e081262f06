"""The container's health probe: GET /health/ on the local gunicorn, as a host ALLOWED_HOSTS accepts.

Run by the Dockerfile's HEALTHCHECK and docker-compose's as ``python config/healthcheck.py``, a plain
script: it imports nothing of the project (no Django, no Celery) and costs a few milliseconds. Django
refuses a request whose Host is not in ALLOWED_HOSTS (400), and a probe of http://127.0.0.1:8000/
sends Host 127.0.0.1, which production settings do not list; so the probe names the first host the
container's own ALLOWED_HOSTS lists. Exit status 0 when /health/ answers 200, else 1 with the reason.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

URL = "http://127.0.0.1:8000/health/"  # gunicorn's --bind in the Dockerfile
TIMEOUT_SECONDS = 4


def probe_host(environ: Mapping[str, str]) -> str:
    """A concrete host name the first ALLOWED_HOSTS entry accepts (".example.com" accepts example.com)."""
    first = (environ.get("ALLOWED_HOSTS") or "").split(",")[0].strip()
    if not first or first == "*":
        return "localhost"
    return first.lstrip(".")


def probe_request(environ: Mapping[str, str]) -> urllib.request.Request:
    return urllib.request.Request(URL, headers={"Host": probe_host(environ)})


def main() -> int:
    try:
        with urllib.request.urlopen(probe_request(os.environ), timeout=TIMEOUT_SECONDS) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:  # refused, timed out: the server is not answering
        print(f"health probe: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"health probe: /health/ answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
