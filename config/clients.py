"""Who is calling: the client's real address behind trusted proxies, and the login lockout's answer.

Behind a reverse proxy REMOTE_ADDR is the proxy's, the same for everyone. TRUSTED_PROXY_COUNT says
how many proxies the platform's own infrastructure puts in front of it; each appends the address
it received from to X-Forwarded-For, so the client is that many entries from the right. Entries
further left were written by the client and could be anything. 0 (the default): no proxy is
trusted and REMOTE_ADDR is the client.
"""

from __future__ import annotations

import ipaddress

from axes.helpers import get_cool_off, get_lockout_message
from django.conf import settings
from django.http import HttpRequest, HttpResponse


def client_ip(request: HttpRequest) -> str:
    """The caller's address (django-axes's AXES_CLIENT_IP_CALLABLE)."""
    remote = request.META.get("REMOTE_ADDR", "")
    count = settings.TRUSTED_PROXY_COUNT
    if count <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [part for part in forwarded if part]
    if not forwarded:
        return remote  # not through the proxies: a direct connection is its own client
    candidate = forwarded[-count] if len(forwarded) >= count else forwarded[0]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote


def login_lockout_response(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """django-axes's lockout answer (AXES_LOCKOUT_CALLABLE): 429 and when to try again.

    Retry-After is the whole cool-off: another failure while locked starts it again
    (AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT), so it is never too early.
    """
    response = HttpResponse(get_lockout_message(), status=settings.AXES_HTTP_RESPONSE_CODE)
    cool_off = get_cool_off(request)
    if cool_off:
        response["Retry-After"] = str(max(int(cool_off.total_seconds()), 1))
    return response
