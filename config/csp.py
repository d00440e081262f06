"""django-csp's middleware with the policy's text built once per process, not for every response.

The text depends only on the settings unless a response asks for a nonce or carries a policy of
its own (the ``csp`` decorators); those go through django-csp unchanged. Building it took about a
tenth of the CPU of an event posted to the API.
"""

from __future__ import annotations

import http.client
from dataclasses import asdict

from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CheckableLazyObject
from csp.middleware import CSPMiddleware as DjangoCSPMiddleware
from csp.utils import build_policy
from django.conf import settings

_PER_RESPONSE = ("_csp_config", "_csp_update", "_csp_replace", "_csp_config_ro", "_csp_update_ro", "_csp_replace_ro")
_KINDS = (
    (HEADER, False, "_csp_exempt", "CONTENT_SECURITY_POLICY"),
    (HEADER_REPORT_ONLY, True, "_csp_exempt_ro", "CONTENT_SECURITY_POLICY_REPORT_ONLY"),
)
_DEBUG_EXEMPT = (http.client.INTERNAL_SERVER_ERROR, http.client.NOT_FOUND)


class CSPMiddleware(DjangoCSPMiddleware):
    _built: dict[bool, tuple[object, str]] = {}  # report only? -> (the setting it was built from, text)

    def process_response(self, request, response):
        nonce_used = getattr(request, "_csp_nonce", None) is not None
        if nonce_used or any(hasattr(response, name) for name in _PER_RESPONSE):
            return super().process_response(request, response)
        if response.status_code in _DEBUG_EXEMPT and settings.DEBUG:
            return response
        for header, report_only, exempt, setting in _KINDS:
            policy = getattr(settings, setting, None)
            text = self._text(request, response, policy, report_only)
            if not text or header in response or getattr(response, exempt, False):
                continue
            prefixes = (policy or {}).get("EXCLUDE_URL_PREFIXES", None) or ()
            if not request.path_info.startswith(tuple(prefixes)):
                response[header] = text
        # As django-csp does: asking for a nonce once the header is written is an error.
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)
        return response

    def _text(self, request, response, policy, report_only: bool) -> str:
        built = self._built.get(report_only)
        if built is None or built[0] is not policy:  # first use, or the settings changed (tests)
            parts = self.get_policy_parts(request=request, response=response, report_only=report_only)
            built = (policy, build_policy(**asdict(parts), report_only=report_only))
            self._built[report_only] = built
        return built[1]
