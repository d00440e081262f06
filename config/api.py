"""Small pieces shared by the apps' REST APIs."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework.exceptions import ValidationError


def raise_as_drf(exc: DjangoValidationError):
    """Re-raise a service's ValidationError as DRF's 400, keeping the field names."""
    detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
    raise ValidationError(detail) from None
