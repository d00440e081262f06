"""REST API: /api/v1/templates/ (+ preview) and /api/v1/senders/; messages: ``api_messages``."""

from __future__ import annotations

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from audience.models import Contact
from config.api import (
    MODEL_SERIALIZER_FIELDS,
    raise_as_drf,
)
from config.roles import is_analyst
from messaging import selectors
from messaging.models import (
    MessageTemplate,
    Sender,
)
from messaging.services import senders as sender_service
from messaging.services import templates as template_service


class AnalystsMayPreview(BasePermission):
    """A preview writes nothing: Analysts may ask for one too."""

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and is_analyst(request.user))


# --- Templates -----------------------------------------------------------------------------


class TemplateSerializer(serializers.ModelSerializer):
    serializer_field_mapping = MODEL_SERIALIZER_FIELDS

    class Meta:
        model = MessageTemplate
        fields = [
            "id",
            "name",
            "channel",
            "locale",
            "body",
            "fallbacks",
            "content_sid",
            "content_variables",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def create(self, validated_data):
        try:
            return template_service.template_create(**validated_data)
        except DjangoValidationError as exc:
            raise_as_drf(exc)

    def update(self, instance, validated_data):
        try:
            return template_service.template_update(instance, data=validated_data)
        except DjangoValidationError as exc:
            raise_as_drf(exc)


class PreviewRequestSerializer(serializers.Serializer):
    contact = serializers.PrimaryKeyRelatedField(queryset=Contact.objects.all(), required=False)
    sample = serializers.DictField(required=False, help_text='Values by placeholder, e.g. {"name": "Amina"}.')
    context = serializers.DictField(required=False, help_text="Values for {{ event.* }} placeholders.")

    def validate(self, attrs):
        if ("contact" in attrs) == ("sample" in attrs):
            raise ValidationError({"non_field_errors": ["give a contact id or sample values (one of them)"]})
        return attrs


class PreviewResponseSerializer(serializers.Serializer):
    channel = serializers.CharField()
    text = serializers.CharField()
    content_sid = serializers.CharField()
    content_variables = serializers.DictField(allow_null=True)
    missing_variables = serializers.ListField(child=serializers.CharField())
    skip_reason = serializers.CharField()
    segments = serializers.IntegerField(allow_null=True)
    encoding = serializers.CharField(allow_null=True)
    characters = serializers.IntegerField()


class TemplateViewSet(viewsets.ModelViewSet):
    serializer_class = TemplateSerializer
    pagination_class = None
    filter_backends = [django_filters.rest_framework.DjangoFilterBackend]
    filterset_fields = ["channel", "locale"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return selectors.template_list()

    def perform_destroy(self, instance):
        if instance.messages.exists():
            raise ValidationError({"non_field_errors": ["this template has messages; it cannot be deleted"]})
        instance.delete()

    @extend_schema(request=PreviewRequestSerializer, responses=PreviewResponseSerializer)
    @action(detail=True, methods=["post"], permission_classes=[AnalystsMayPreview])
    def preview(self, request, pk=None):
        """Render against a contact or sample values: text or content variables, what is missing, SMS parts."""
        template = self.get_object()
        payload = PreviewRequestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        result = template_service.template_preview(
            template, contact=data.get("contact"), sample=data.get("sample"), context=data.get("context")
        )
        return Response(result)


# --- Senders -------------------------------------------------------------------------------


class SenderSerializer(serializers.ModelSerializer):
    effective_mps = serializers.IntegerField(read_only=True)

    class Meta:
        model = Sender
        fields = [
            "id",
            "name",
            "provider",
            "channel",
            "kind",
            "from_address",
            "messaging_service_sid",
            "mps",
            "effective_mps",
            "is_active",
            "created_at",
        ]
        read_only_fields = ["created_at"]

    def validate(self, attrs):
        def current(name: str) -> str:
            if name in attrs:
                return attrs[name] or ""
            return getattr(self.instance, name, "") if self.instance else ""

        fields = ("channel", "kind", "from_address", "messaging_service_sid")
        errors = sender_service.sender_errors(*(current(name) for name in fields))
        if errors:
            raise ValidationError(errors)
        return attrs


class SenderViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = SenderSerializer
    pagination_class = None
    filter_backends = [django_filters.rest_framework.DjangoFilterBackend]
    filterset_fields = ["channel", "kind", "provider", "is_active"]
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        return selectors.sender_list()
