"""Small pieces shared by the apps' REST APIs."""

from __future__ import annotations

import codecs
import datetime as dt
import threading

import django_filters
import django_filters.fields
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ParseError, ValidationError
from rest_framework.parsers import JSONParser, get_encoding
from rest_framework.request import Request
from rest_framework.utils import json as drf_json

from config import idempotency
from config.json_limits import DepthLimitedJSONDecoder


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


class PkField(serializers.PrimaryKeyRelatedField):
    """A related row's primary key, checked for form only: the view reads the rows itself.

    A request naming several rows (a contact, a template, a sender) then reads them in one
    statement (``config.sql.instances_by_pk``) instead of one query per field, and names a missing
    one with ``missing``: the same messages as DRF's field.
    """

    BIGGEST = 2**63 - 1

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | str):
            self.fail("incorrect_type", data_type=type(data).__name__)
        try:
            pk = int(data)
        except ValueError:
            self.fail("incorrect_type", data_type=type(data).__name__)
        if not 1 <= pk <= self.BIGGEST:
            self.fail("does_not_exist", pk_value=data)
        return pk

    def missing(self, pk: int) -> ValidationError:
        return ValidationError({self.field_name: [self.error_messages["does_not_exist"].format(pk_value=pk)]})


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


class DepthLimitedJSONParser(JSONParser):
    """DRF's JSON parser with the project's nesting limit: a body nested too deep is a 400 saying where."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = get_encoding(parser_context or {})
        parse_constant = drf_json.strict_constant if self.strict else None
        try:
            reader = codecs.getreader(encoding)(stream)
            return drf_json.load(reader, cls=DepthLimitedJSONDecoder, parse_constant=parse_constant)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


class JSONField(serializers.JSONField):
    """DRF's JSONField whose form-encoded input (decoded by the field itself) has the same nesting limit."""

    def __init__(self, **kwargs):
        kwargs["decoder"] = kwargs.get("decoder") or DepthLimitedJSONDecoder  # a model field passes None
        super().__init__(**kwargs)


# serializer_field_mapping for a ModelSerializer whose model has JSON fields: they become the JSONField above.
MODEL_SERIALIZER_FIELDS = {**serializers.ModelSerializer.serializer_field_mapping, models.JSONField: JSONField}


_by_thread = threading.local()


def represent(serializer_class, instance, context: dict) -> dict:
    """``serializer_class(instance, context=context).data``, from one serializer per class and thread.

    A model serializer builds and copies its fields for every instance it makes (for Message's 30
    fields, most of a transactional send's CPU); a thread answers one request at a time, so it
    may keep one serializer, its fields bound once, and give it each instance in turn.
    """
    serializers_made = _by_thread.__dict__.setdefault("serializers", {})
    serializer = serializers_made.get(serializer_class)
    if serializer is None:
        serializer = serializers_made[serializer_class] = serializer_class(context=context)
    serializer.instance, serializer._context = instance, context
    serializer.__dict__.pop("_data", None)
    return serializer.data


def validated(serializer_class, data, context: dict | None = None) -> dict:
    """``serializer_class(data=data, context=context)``'s validated data (a 400 otherwise), from one
    serializer per class and thread, as ``represent``: building and copying its fields for every
    request cost a hot door more than checking them."""
    serializers_made = _by_thread.__dict__.setdefault("validators", {})
    serializer = serializers_made.get(serializer_class)
    if serializer is None:
        serializer = serializers_made[serializer_class] = serializer_class(data=data, context=context or {})
    serializer.initial_data, serializer._context = data, context or {}
    for made in ("_validated_data", "_errors", "_data"):
        serializer.__dict__.pop(made, None)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
