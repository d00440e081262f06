"""The policy header built once per process is the one django-csp builds for each response."""

from csp.constants import HEADER, NONCE
from csp.middleware import CSPMiddleware as DjangoCSPMiddleware
from django.http import HttpResponse
from django.test import RequestFactory

from config.csp import CSPMiddleware


def _headers(middleware_class, *, nonce: bool = False, path: str = "/api/v1/events/"):
    middleware = middleware_class(lambda request: HttpResponse("ok"))
    request = RequestFactory().get(path)
    middleware.process_request(request)
    if nonce:
        str(request.csp_nonce)  # a page's template asked for one
    return middleware.process_response(request, HttpResponse("ok")), request


def test_the_remembered_header_is_django_csps_and_stays_so_on_later_responses():
    ours, _ = _headers(CSPMiddleware)
    again, _ = _headers(CSPMiddleware)
    theirs, _ = _headers(DjangoCSPMiddleware)
    assert ours[HEADER] == again[HEADER] == theirs[HEADER] and "default-src 'self'" in ours[HEADER]


def test_a_response_with_a_nonce_gets_it_in_its_header(settings):
    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"script-src": ["'self'", NONCE]}}
    response, request = _headers(CSPMiddleware, nonce=True)
    assert f"'nonce-{request._csp_nonce}'" in response[HEADER]
    assert f"'nonce-{request._csp_nonce}'" not in _headers(CSPMiddleware)[0][HEADER]


def test_new_settings_make_a_new_header(settings):
    before = _headers(CSPMiddleware)[0][HEADER]
    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"default-src": ["'none'"]}}
    after = _headers(CSPMiddleware)[0][HEADER]
    assert after != before and after == "default-src 'none'"
