"""The REST API's settings: Django REST framework's (with the throttle rates read from the environment)
and drf-spectacular's (the OpenAPI schema and its pages). settings.py sets REST_FRAMEWORK and
SPECTACULAR_SETTINGS from these."""

from __future__ import annotations

from typing import Any

from config.env import Env


def rest_framework_settings(env: Env) -> dict[str, Any]:
    return {
        "DEFAULT_AUTHENTICATION_CLASSES": [
            "config.auth.CachedTokenAuthentication",
            "rest_framework.authentication.SessionAuthentication",
        ],
        "DEFAULT_PERMISSION_CLASSES": ["config.roles.StaffWriteAnalystRead"],
        # DRF's three parsers, the JSON one refusing bodies nested deeper than JSON_MAX_DEPTH (400).
        "DEFAULT_PARSER_CLASSES": [
            "config.api.DepthLimitedJSONParser",
            "rest_framework.parsers.FormParser",
            "rest_framework.parsers.MultiPartParser",
        ],
        "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.CursorPagination",
        "PAGE_SIZE": 50,
        "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
        "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
        "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
        # Throttling per token (per user for sessions), one bucket per door (config/throttling.py). The
        # defaults sit far above what a backend sends on purpose, so they stop a runaway client, never a
        # production backend.
        "DEFAULT_THROTTLE_CLASSES": ["config.throttling.TokenRateThrottle"],
        "DEFAULT_THROTTLE_RATES": {
            "events": env.rate("API_THROTTLE_EVENTS_RATE", "60000/min"),
            "messages": env.rate("API_THROTTLE_MESSAGES_RATE", "30000/min"),
            "imports": env.rate("API_THROTTLE_IMPORTS_RATE", "60/min"),
            "write": env.rate("API_THROTTLE_WRITE_RATE", "1200/min"),
            "read": env.rate("API_THROTTLE_READ_RATE", "6000/min"),
        },
    }


SPECTACULAR_SETTINGS = {
    "TITLE": "Messaging platform API",
    "DESCRIPTION": "Contacts, consent, messaging, campaigns and reporting.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its pages are for signed-in users (a token or a session), like the API itself.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Swagger UI's scripts come from the drf-spectacular-sidecar package, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ConsentStatusEnum": "audience.models.ConsentStatus",
        "ImportStatusEnum": "audience.models.ImportStatus",
        "MessageStatusEnum": "messaging.models.MessageStatus",
        "CampaignStatusEnum": "campaigns.models.CampaignStatus",
        "CampaignRunStatusEnum": "campaigns.models.RunStatus",
        "InboundKindEnum": "reporting.monitoring.InboundKind",
        "ProviderCallbackKindEnum": "messaging.models.ProviderCallback.Kind",
    },
}
