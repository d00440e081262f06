"""REST API for segments: CRUD in either rule syntax and the live preview of who they match."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from audience.models import Contact
from campaigns import selectors, services
from campaigns.models import Segment
from campaigns.segments.rules import RuleError
from campaigns.services import SegmentError
from config import privacy
from config.api import (
    JSONField,
    raise_as_drf,
)
from config.roles import is_analyst

SAMPLE_SIZE = 10


class SegmentSerializer(serializers.ModelSerializer):
    definition = JSONField(required=False, help_text="A JSON rule tree; give this or `query`.")
    query = serializers.CharField(
        required=False, allow_blank=True, help_text='A query string such as age >= 18 AND city = "Nairobi".'
    )
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Segment
        fields = ["id", "name", "description", "definition", "query", "created_by", "created_at", "updated_at"]
        read_only_fields = ["id", "created_by", "created_at", "updated_at"]
        # Uniqueness is the service's (and the database's) to decide.
        validators = []
        extra_kwargs = {"name": {"validators": []}}

    def create(self, validated_data):
        return service_call(
            services.segment_create,
            name=validated_data.get("name", ""),
            description=validated_data.get("description", ""),
            definition=validated_data.get("definition"),
            query=validated_data.get("query"),
            created_by=self.context["request"].user,
        )

    def update(self, instance, validated_data):
        return service_call(services.segment_update, instance, data=validated_data)


class PreviewSerializer(serializers.Serializer):
    definition = JSONField(required=False)
    query = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)


class SampleContactSerializer(serializers.ModelSerializer):
    class Meta:
        model = Contact
        fields = ["id", "phone", "name", "channel", "locale", "consent_status", "attributes", "created_at"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        return data if privacy.request_sees_full(self.context.get("request")) else privacy.contact_masked(data)


def service_call(function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except SegmentError as exc:
        raise SegmentInvalid(exc) from None
    except DjangoValidationError as exc:
        raise_as_drf(exc)


class SegmentInvalid(serializers.ValidationError):
    """A 400 whose ``error`` member keeps its numbers (line, column) as numbers."""

    def __init__(self, error: SegmentError) -> None:
        super().__init__()
        self.detail = {**error.message_dict, "error": error.detail}


def preview_payload(source: selectors.SegmentSource, request) -> dict:
    preview = selectors.segment_preview(source, size=SAMPLE_SIZE)
    sample = SampleContactSerializer(preview["sample"], many=True, context={"request": request}).data
    return {**preview, "sample": sample}


class SegmentPagination(CursorPagination):
    ordering = ("-created_at", "-id")


class PreviewPermission(BasePermission):
    """The preview writes nothing, so Analysts may use it although it is a POST."""

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and is_analyst(request.user))


class SegmentViewSet(viewsets.ModelViewSet):
    serializer_class = SegmentSerializer
    pagination_class = SegmentPagination
    filter_backends = []
    lookup_value_regex = r"\d+"
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return selectors.segment_list()

    def perform_destroy(self, instance):
        service_call(services.segment_delete, instance)

    @extend_schema(request=PreviewSerializer, responses={200: dict})
    @action(detail=False, methods=["post"], permission_classes=[PreviewPermission])
    def preview(self, request):
        """Count the contacts a definition or query matches (and the opted-in among them), with a sample."""
        payload = PreviewSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        clean = service_call(
            services.segment_definition_clean,
            definition=payload.validated_data.get("definition"),
            query=payload.validated_data.get("query"),
        )
        payload = preview_payload(clean.rule, request)
        return Response({**payload, "definition": clean.definition}, status=status.HTTP_200_OK)

    @extend_schema(responses={200: dict})
    @action(detail=True, methods=["get"], url_path="preview")
    def saved_preview(self, request, pk=None):
        """The same count and sample for a saved segment."""
        segment = self.get_object()
        try:
            return Response(preview_payload(segment, request))
        except RuleError as exc:  # stored before a rule change made it invalid: refuse, never "everyone"
            return Response({"definition": [str(exc)]}, status=status.HTTP_409_CONFLICT)


# --- Campaigns -----------------------------------------------------------------------------
