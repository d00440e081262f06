"""Small pieces shared by the apps' REST APIs."""

from __future__ import annotations

import datetime as dt

import django_filters
import django_filters.fields
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework.exceptions import ValidationError


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
