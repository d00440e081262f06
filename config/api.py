"""Small pieces shared by the apps' REST APIs."""

from __future__ import annotations

import codecs
import datetime as dt

import django_filters
import django_filters.fields
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from rest_framework import serializers
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser, get_encoding
from rest_framework.utils import json as drf_json

from config.json_limits import DepthLimitedJSONDecoder


def raise_as_drf(exc: DjangoValidationError):
    """Re-raise a service's ValidationError as DRF's 400, keeping the field names."""
    detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
    raise ValidationError(detail) from None


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
