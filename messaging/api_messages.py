"""REST API: /api/v1/messages/ (list, detail, create with an idempotency key, resolve an unknown outcome)."""

from __future__ import annotations

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from audience.models import Channel, Contact
from audience.phones import InvalidPhone, normalize_phone
from config import privacy, sql
from config.api import (
    IDEMPOTENCY_KEY_REUSED,
    PkField,
    idempotency_fingerprint,
    idempotency_key,
    idempotency_parameter,
    raise_as_drf,
    represent,
    validated,
)
from messaging import selectors
from messaging.models import (
    Direction,
    Message,
    MessageResolution,
    MessageStatus,
    MessageTemplate,
    ProviderCallback,
    ResolutionAction,
    Sender,
)
from messaging.services import create as create_service
from messaging.services import outcomes


class ProviderCallbackSerializer(serializers.ModelSerializer):
    class Meta:
        model = ProviderCallback
        fields = ["id", "kind", "status", "error_code", "received_at", "applied_at"]


class MessageSerializer(serializers.ModelSerializer):
    unknown_gives_up_at = serializers.SerializerMethodField(
        help_text="For an outcome unknown: when the lookups stop and the message is failed."
    )

    class Meta:
        model = Message
        fields = [
            "id",
            "direction",
            "channel",
            "contact",
            "sender",
            "template",
            "to_address",
            "from_address",
            "body",
            "content_sid",
            "content_variables",
            "status",
            "skip_reason",
            "provider_sid",
            "error_code",
            "error_message",
            "segments",
            "encoding",
            "price",
            "price_unit",
            "attempts",
            "next_attempt_at",
            "idempotency_key",
            "created_at",
            "queued_at",
            "sending_at",
            "sent_at",
            "delivered_at",
            "read_at",
            "failed_at",
            "canceled_at",
            "skipped_at",
            "received_at",
            "unknown_gives_up_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_unknown_gives_up_at(self, obj: Message):
        return selectors.unknown_gives_up_at(obj)

    # What a reader without the permission sees masked (config.privacy): the person's address (the
    # recipient of an outbound message, the sender of an inbound one) and free text that may quote them.
    TEXTS = ("body", "error_message", "idempotency_key")

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if privacy.request_sees_full(self.context.get("request")):
            return data
        personal = "to_address" if instance.direction == Direction.OUTBOUND else "from_address"
        data[personal] = privacy.phone_mask(data[personal])
        for name in self.TEXTS:
            data[name] = privacy.shown("text", data[name], False)
        data["content_variables"] = privacy.redact_json(data["content_variables"])
        return data


class MessageResolutionSerializer(serializers.ModelSerializer):
    class Meta:
        model = MessageResolution
        fields = ["action", "actor", "detail", "created_at"]
        read_only_fields = fields


class MessageDetailSerializer(MessageSerializer):
    history = ProviderCallbackSerializer(source="callbacks", many=True, read_only=True)
    resolutions = MessageResolutionSerializer(many=True, read_only=True, help_text="Staff actions on its outcome.")

    class Meta(MessageSerializer.Meta):
        fields = [*MessageSerializer.Meta.fields, "history", "resolutions"]
        read_only_fields = fields


class MessageResolveSerializer(serializers.Serializer):
    action = serializers.ChoiceField(
        choices=ResolutionAction.choices,
        help_text="lookup: ask the provider now; resend: send again (a deliberate new attempt); fail: mark it failed.",
    )


class MessageCreateSerializer(serializers.Serializer):
    contact = PkField(queryset=Contact.objects.all(), required=False)
    phone = serializers.CharField(required=False, help_text="Instead of contact: the contact's phone, any spelling.")
    template = PkField(queryset=MessageTemplate.objects.all(), required=False)
    body = serializers.CharField(
        required=False,
        allow_blank=False,
        max_length=1600,
        trim_whitespace=False,
        help_text="Free text, rendered for the contact like a template: {{ name }}, {{ attributes.<key> }}, "
        "{{ event.<key> }} (from context). No fallbacks: a value the contact lacks is a 400 naming it.",
    )
    sender = PkField(queryset=Sender.objects.all(), required=False)
    context = serializers.DictField(required=False, help_text="Values for {{ event.* }} placeholders.")

    def validate(self, attrs):
        if ("contact" in attrs) == ("phone" in attrs):
            raise ValidationError({"contact": ["give a contact id or a phone (one of them)"]})
        if ("template" in attrs) == ("body" in attrs):
            raise ValidationError({"template": ["give a template id or a body (one of them)"]})
        if "phone" in attrs:
            attrs["contact"] = self._contact_by_phone(attrs.pop("phone"))
        self._rows_read(attrs)
        return attrs

    ROWS = {"contact": Contact, "template": MessageTemplate, "sender": Sender}

    def _rows_read(self, attrs: dict) -> None:
        """The contact (unless found by phone), template and sender, in one statement."""
        names = [name for name in self.ROWS if isinstance(attrs.get(name), int)]
        if not names:
            return
        rows = sql.instances_by_pk([(self.ROWS[name], attrs[name]) for name in names])
        for name, row in zip(names, rows, strict=True):
            if row is None:
                raise self.fields[name].missing(attrs[name])
            attrs[name] = row

    @staticmethod
    def _contact_by_phone(phone: str) -> Contact:
        try:
            normalized = normalize_phone(phone)
        except InvalidPhone as exc:
            raise ValidationError({"phone": [str(exc)]}) from None
        contact = Contact.objects.filter(phone=normalized).first()
        if contact is None:
            raise ValidationError({"phone": [f"no contact with phone {normalized}; create it first"]})
        return contact


class MessageFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=MessageStatus.choices)
    channel = django_filters.ChoiceFilter(choices=Channel.choices)
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = Message
        fields = ["status", "channel", "direction", "contact", "sender", "template", "created_after"]


class MessagePagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size_query_param = "page_size"
    max_page_size = 500


class MessageViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    filterset_class = MessageFilter
    pagination_class = MessagePagination
    http_method_names = ["get", "post", "head", "options"]

    def get_queryset(self):
        if self.action in ("retrieve", "resolve"):
            return selectors.message_with_history()
        return selectors.message_list()

    def get_serializer_class(self):
        if self.action == "create":
            return MessageCreateSerializer
        return MessageDetailSerializer if self.action == "retrieve" else MessageSerializer

    @extend_schema(
        request=MessageCreateSerializer,
        responses={
            202: MessageSerializer,
            200: OpenApiResponse(MessageSerializer, description="A replay: the first message, nothing new sent."),
            400: OpenApiResponse(description="A field is missing or wrong; the body names it."),
            422: IDEMPOTENCY_KEY_REUSED,
        },
        parameters=[idempotency_parameter(required=False, replay="returns the first message with 200")],
    )
    def create(self, request, *args, **kwargs):
        """Send one message to a contact; an Idempotency-Key replay returns the first message (200)."""
        key = idempotency_key(request, required=False)
        fingerprint = idempotency_fingerprint(request) if key else ""
        try:
            try:
                # The insert finds a replay (its key is unique), so a new key costs no lookup first.
                data = self._validated(request)
                message, created = create_service.message_create(
                    contact=data["contact"],
                    template=data.get("template"),
                    body=data.get("body", ""),
                    sender=data.get("sender"),
                    context=data.get("context"),
                    idempotency_key=key,
                    request_hash=fingerprint,
                    replay_checked=True,
                )
            except (DjangoValidationError, ValidationError):
                # A replay answers with the first message even if its request would not validate now.
                replayed = create_service.message_replay(key, fingerprint) if key else None
                if replayed is None:
                    raise
                message, created = replayed, False
        except DjangoValidationError as exc:
            raise_as_drf(exc)
        code = status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK
        return Response(represent(MessageSerializer, message, self.get_serializer_context()), status=code)

    @staticmethod
    def _validated(request) -> dict:
        return validated(MessageCreateSerializer, request.data)

    @extend_schema(request=MessageResolveSerializer, responses={200: MessageDetailSerializer})
    @action(detail=True, methods=["post"])
    def resolve(self, request, pk=None):
        """Resolve a message whose outcome is unknown: look it up now, resend it, or mark it failed (Staff)."""
        message = self.get_object()
        payload = MessageResolveSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            outcomes.messages_resolve_any([message.pk], payload.validated_data["action"], actor=request.user)
        except DjangoValidationError as exc:
            raise_as_drf(exc)
        message = selectors.message_with_history().get(pk=message.pk)
        return Response(MessageDetailSerializer(message).data)
