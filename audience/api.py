"""REST API for contacts, their consent and topics (/api/v1/contacts/, /api/v1/topics/); imports: ``api_imports``."""

from __future__ import annotations

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.filters import SearchFilter
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from audience import selectors, services
from audience.models import (
    Channel,
    ConsentEvent,
    ConsentSource,
    ConsentStatus,
    Contact,
    Topic,
)
from audience.phones import InvalidPhone, normalize_phone
from config import privacy
from config.api import JSONField, UtcIsoDateTimeFilter, raise_as_drf


class TopicSerializer(serializers.ModelSerializer):
    class Meta:
        model = Topic
        fields = ["id", "name", "description", "created_at"]
        read_only_fields = ["id", "created_at"]


class ContactSerializer(serializers.ModelSerializer):
    topics = serializers.SlugRelatedField(
        slug_field="name",
        queryset=Topic.objects.all(),
        many=True,
        required=False,
        help_text="Topic names; on update the list replaces the contact's topics.",
    )
    phone = serializers.CharField(help_text="Any common spelling; stored in E.164.")
    timezone = serializers.CharField(required=False, allow_blank=True)
    attributes = JSONField(required=False, help_text="Merged key by key on update; null removes a key.")

    class Meta:
        model = Contact
        fields = [
            "id",
            "phone",
            "channel",
            "name",
            "email",
            "locale",
            "timezone",
            "attributes",
            "topics",
            "consent_status",
            "consent_updated_at",
            "opted_in_at",
            "opted_out_at",
            "last_inbound_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "consent_updated_at",
            "opted_in_at",
            "opted_out_at",
            "last_inbound_at",
            "created_at",
            "updated_at",
        ]

    def validate_attributes(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("attributes must be a JSON object")
        return value

    def to_representation(self, instance):
        data = super().to_representation(instance)
        return data if privacy.request_sees_full(self.context.get("request")) else privacy.contact_masked(data)

    def create(self, validated_data):
        topics = validated_data.pop("topics", [])
        try:
            return services.contact_create(
                **validated_data,
                topics=topics,
                source=ConsentSource.API,
                actor=self.context["request"].user,
                evidence={"door": "api"},
            )
        except DjangoValidationError as exc:
            raise_as_drf(exc)

    def update(self, instance, validated_data):
        topics = validated_data.pop("topics", None)
        if "consent_status" in validated_data and validated_data["consent_status"] != instance.consent_status:
            raise ValidationError({"consent_status": ["change consent with POST /api/v1/contacts/{id}/consent"]})
        validated_data.pop("consent_status", None)
        try:
            return services.contact_update(instance, data=validated_data, topics=topics)
        except DjangoValidationError as exc:
            raise_as_drf(exc)


class ConsentEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = ConsentEvent
        fields = ["id", "seq", "kind", "from_status", "to_status", "source", "actor", "evidence", "created_at"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["evidence"] = privacy.shown(
            "json", data["evidence"], privacy.request_sees_full(self.context.get("request"))
        )
        return data


class ConsentChangeSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=ConsentStatus.choices)
    document = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="A reference to the signed form or document of the consent. Required to opt in a contact whose "
        "opt-out came from a STOP keyword, the provider (the carrier reported an opt-out) or the suppression list.",
    )
    reason = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="Why the change is made, in your words. Required with `document` in the same cases.",
    )
    evidence = JSONField(
        required=False, help_text="Anything else that proves the change (a ticket, a call record); kept as given."
    )

    def validate_evidence(self, value):
        if value is not None and not isinstance(value, dict):
            raise serializers.ValidationError("evidence must be a JSON object")
        return value

    def evidence_given(self) -> dict:
        """The evidence as given, with ``document`` and ``reason`` in it when they were sent."""
        data = self.validated_data
        evidence = dict(data.get("evidence") or {})
        for name in ("document", "reason"):
            if name in data:
                evidence[name] = data[name]
        return evidence


class ContactFilter(django_filters.FilterSet):
    consent_status = django_filters.ChoiceFilter(choices=ConsentStatus.choices)
    channel = django_filters.ChoiceFilter(choices=Channel.choices)
    locale = django_filters.CharFilter()
    topic = django_filters.CharFilter(field_name="topics__name", label="Topic name")
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    phone = django_filters.CharFilter(method="filter_phone")

    class Meta:
        model = Contact
        fields = ["consent_status", "channel", "locale", "topic", "created_after", "created_before", "phone"]

    def filter_phone(self, queryset, name, value):
        try:
            return queryset.filter(phone=normalize_phone(value))
        except InvalidPhone as exc:
            raise ValidationError({"phone": [str(exc)]}) from None


class ContactPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size_query_param = "page_size"
    max_page_size = 500


class ContactViewSet(viewsets.ModelViewSet):
    serializer_class = ContactSerializer
    filterset_class = ContactFilter
    filter_backends = [django_filters.rest_framework.DjangoFilterBackend, SearchFilter]
    search_fields = ["phone", "name", "email"]
    pagination_class = ContactPagination
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        queryset = selectors.contact_list()
        if "topic" in self.request.query_params:
            queryset = queryset.distinct()
        return queryset

    def perform_destroy(self, instance):
        services.contact_delete(instance, actor=self.request.user)

    @extend_schema(request=ConsentChangeSerializer, responses=ContactSerializer)
    @action(detail=True, methods=["post"])
    def consent(self, request, pk=None):
        """Opt a contact in or out, writing an audit row with the evidence given.

        Opting in a contact whose opt-out came from a STOP keyword, the provider or the
        suppression list needs `document` and `reason` (400 naming each one missing); it
        lifts the phone's suppression entry, which the audit row records.
        """
        contact = self.get_object()
        payload = ConsentChangeSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            services.consent_change(
                contact,
                to_status=payload.validated_data["status"],
                source=ConsentSource.API,
                actor=request.user,
                evidence=payload.evidence_given(),
            )
        except DjangoValidationError as exc:
            raise_as_drf(exc)
        contact.refresh_from_db()
        return Response(ContactSerializer(contact, context=self.get_serializer_context()).data)

    @extend_schema(responses=ConsentEventSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="consent-history", pagination_class=None, filter_backends=[])
    def consent_history(self, request, pk=None):
        contact = self.get_object()
        events = selectors.contact_consent_history(contact)[:500]
        return Response(ConsentEventSerializer(events, many=True, context=self.get_serializer_context()).data)


class TopicViewSet(viewsets.ModelViewSet):
    serializer_class = TopicSerializer
    queryset = Topic.objects.all()
    pagination_class = None
    filter_backends = []
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
