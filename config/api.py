"""Small pieces shared by the apps' REST APIs."""

from __future__ import annotations

import datetime as dt

import django_filters
import django_filters.fields
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request

from config import idempotency


class IdempotencyKeyReused(APIException):
    """422: the Idempotency-Key was used for a different request (the body names the header)."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_key_reused"


def raise_as_drf(exc: DjangoValidationError):
    """Re-raise a service's ValidationError as DRF's 400 (422 for a reused idempotency key), keeping the field names."""
    detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
    if isinstance(exc, idempotency.IdempotencyConflict):
        raise IdempotencyKeyReused(detail) from None
    raise ValidationError(detail) from None


# --- Idempotency-Key (see config.idempotency) ---------------------------------------------


def idempotency_key(request: Request, *, required: bool) -> str | None:
    """The request's Idempotency-Key, trimmed; None when absent and optional. 400 naming the header otherwise."""
    key = (request.headers.get(idempotency.HEADER) or "").strip()
    if not key:
        if required:
            raise ValidationError(
                {idempotency.HEADER: ["this header is required: a unique key per request, e.g. a UUID"]}
            )
        return None
    if len(key) > idempotency.MAX_LENGTH:
        raise ValidationError({idempotency.HEADER: [f"at most {idempotency.MAX_LENGTH} characters"]})
    return key


def idempotency_fingerprint(request: Request) -> str:
    """The hash a replay's body is compared with (the parsed body: JSON key order does not matter)."""
    return idempotency.request_fingerprint(request.data)


def idempotency_parameter(*, required: bool, replay: str) -> OpenApiParameter:
    """The header as the schema documents it; ``replay`` says what a replay answers."""
    need = "Required." if required else "Optional."
    return OpenApiParameter(
        idempotency.HEADER,
        str,
        OpenApiParameter.HEADER,
        required=required,
        description=f"{need} At most {idempotency.MAX_LENGTH} characters, e.g. a UUID. A replay with the same "
        f"key and body {replay} and does nothing new; the same key with another body is a 422.",
    )


IDEMPOTENCY_KEY_REUSED = OpenApiResponse(description="The Idempotency-Key was used for a different request.")


class _UtcIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """An ISO 8601 datetime, turned to UTC before it reaches a query.

    Python accepts UTC offsets up to ±23:59 where PostgreSQL stops at ±15:59, and a date at the edge
    of the calendar can leave it once converted: both are a 400 naming the parameter, never a 500.
    """

    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(dt.UTC) if parsed.tzinfo else parsed
        except OverflowError:
            raise DjangoValidationError("Date and time out of range.", code="invalid") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """IsoDateTimeFilter whose value is in UTC (see _UtcIsoDateTimeField)."""

    field_class = _UtcIsoDateTimeField
