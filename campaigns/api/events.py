"""REST API for customer events: one or a batch posted, the list and one event read back."""

from __future__ import annotations

from collections import Counter

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from campaigns.models import Event, EventStatus
from campaigns.services import events
from config import privacy
from config.api import (
    IDEMPOTENCY_KEY_REUSED,
    DepthLimitedJSONParser,
    IdempotencyKeyReused,
    JSONField,
    UtcIsoDateTimeFilter,
    idempotency_fingerprint,
    idempotency_key,
    idempotency_parameter,
    raise_as_drf,
)
from config.idempotency import request_fingerprint


@extend_schema_field({"oneOf": [{"type": "integer"}, {"type": "string"}], "example": "+254712345678"})
class ContactRefSchemaField(serializers.Field):
    """A contact by id (a JSON number) or by phone (a string, in any common spelling); documents the field."""


class EventCreateSerializer(serializers.Serializer):
    """The body of POST /api/v1/events/ (documentation: campaigns.services.events.event_clean checks it)."""

    contact = ContactRefSchemaField(help_text="The contact's id, or its phone in any common spelling.")
    name = serializers.CharField(max_length=100, help_text="What happened, e.g. order_shipped.")
    properties = JSONField(required=False, help_text="A JSON object; its values fill {{ event.<key> }} placeholders.")
    occurred_at = serializers.DateTimeField(required=False, help_text="When it happened; default: when received.")
    create_contact = serializers.BooleanField(
        required=False,
        default=False,
        help_text="For a phone the platform does not know: create the contact, opted out (an event is no "
        "consent). Otherwise such an event is refused (wait=true) or kept as unknown_contact.",
    )


class EventBatchItemSerializer(EventCreateSerializer):
    idempotency_key = serializers.CharField(max_length=255, help_text="A unique key per event, e.g. a UUID.")


class EventBatchSerializer(serializers.Serializer):
    events = EventBatchItemSerializer(many=True, help_text=f"1 to {events.MAX_BATCH} events.")


class EventResultSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="The event's position in the request, from 0.")
    status = serializers.ChoiceField(
        choices=["accepted", "replayed", "unknown_contact", "error"],
        help_text="accepted: stored, to be matched; replayed: its key was used before with the same event; "
        "unknown_contact: stored, no contact has its phone; error: refused, see code and errors.",
    )
    id = serializers.IntegerField(required=False, help_text="The stored event (absent for an error).")
    event_status = serializers.ChoiceField(
        choices=["pending", "matched", "unknown_contact"], required=False, help_text="The stored event's status."
    )
    code = serializers.IntegerField(
        required=False, help_text="For an error: 400 (a bad field) or 422 (the key was used for another event)."
    )
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="For an error: messages by field name.",
    )


class EventBatchResponseSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    replayed = serializers.IntegerField()
    unknown_contact = serializers.IntegerField()
    errors = serializers.IntegerField()
    results = EventResultSerializer(many=True, help_text="One per event, in the request's order.")


class EventAcceptedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["accepted", "replayed", "unknown_contact"])
    event_status = serializers.ChoiceField(choices=["pending", "matched", "unknown_contact"])


class EventSerializer(serializers.ModelSerializer):
    matched_campaigns = serializers.SerializerMethodField()

    class Meta:
        model = Event
        fields = [
            "id",
            "contact",
            "name",
            "properties",
            "occurred_at",
            "received_at",
            "status",
            "matched_at",
            "matched_campaigns",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.IntegerField()))
    def get_matched_campaigns(self, obj: Event) -> list[int]:
        return sorted(campaign.pk for campaign in obj.matched_campaigns.all())

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if not privacy.request_sees_full(self.context.get("request")):
            data["properties"] = privacy.redact_json(data["properties"])  # phones and e-mails a backend put there
        return data


class EventFilter(django_filters.FilterSet):
    name = django_filters.CharFilter()
    contact = django_filters.NumberFilter(field_name="contact_id")
    campaign = django_filters.NumberFilter(field_name="matched_campaigns", help_text="Events that fired it.")
    status = django_filters.ChoiceFilter(choices=EventStatus.choices)
    occurred_after = UtcIsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    occurred_before = UtcIsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt")
    received_after = UtcIsoDateTimeFilter(field_name="received_at", lookup_expr="gte")
    received_before = UtcIsoDateTimeFilter(field_name="received_at", lookup_expr="lt")

    class Meta:
        model = Event
        fields = ["name", "contact", "campaign", "status"]


class EventPagination(CursorPagination):
    ordering = ("-received_at", "-id")
    page_size_query_param = "page_size"
    max_page_size = 500


class EventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Events that fire triggered campaigns: post them, list them (Analysts read, Staff write)."""

    serializer_class = EventSerializer
    pagination_class = EventPagination
    filterset_class = EventFilter
    queryset = Event.objects.prefetch_related("matched_campaigns").order_by("-received_at", "-id")
    http_method_names = ["get", "post", "head", "options"]

    @extend_schema(
        request=EventCreateSerializer,
        responses={
            201: EventSerializer,
            202: EventAcceptedSerializer,
            400: OpenApiResponse(description="A field is missing or wrong; the body names it."),
            422: IDEMPOTENCY_KEY_REUSED,
        },
        parameters=[
            idempotency_parameter(required=True, replay="returns the first event (same status and body)"),
            OpenApiParameter(
                "wait",
                bool,
                OpenApiParameter.QUERY,
                description="true (the default): match before answering, 201 with the campaigns it fired. "
                "false: answer 202 once the event is stored; workers match it within seconds "
                "(GET the event for its matched_campaigns). Only then is an unknown phone kept as unknown_contact.",
            ),
        ],
    )
    def create(self, request, *args, **kwargs):
        """Record an event; running triggered campaigns it matches send their template to the contact."""
        key = idempotency_key(request, required=True)
        fingerprint = idempotency_fingerprint(request)
        if not _wait(request):
            return self._accept(request, key, fingerprint)
        try:
            replayed = events.event_replay(key, fingerprint)
            if replayed is None:
                item = events.event_clean(request.data, key=key, request_hash=fingerprint)
                replayed, _ = events.event_record(
                    contact=events.event_contact(item, actor=request.user.get_username()),
                    name=item.name,
                    properties=item.properties,
                    occurred_at=item.occurred_at,
                    idempotency_key=key,
                    request_hash=fingerprint,
                    replay_checked=True,
                )
            elif replayed.status == EventStatus.PENDING:  # stored without waiting; this caller waits
                events.events_match([replayed.pk])
        except DjangoValidationError as exc:
            raise_as_drf(exc)
        event = Event.objects.prefetch_related("matched_campaigns").get(pk=replayed.pk)
        return Response(EventSerializer(event).data, status=status.HTTP_201_CREATED)

    def _accept(self, request, key: str, fingerprint: str) -> Response:
        try:
            item = events.event_clean(request.data, key=key, request_hash=fingerprint)
        except DjangoValidationError as exc:
            raise_as_drf(exc)
        outcome = events.events_store([item], actor=request.user.get_username())[0]
        if outcome.status == events.Outcome.ERROR:
            field, messages = next(iter(outcome.errors.items()))
            if outcome.code == 422:
                raise IdempotencyKeyReused({"Idempotency-Key": messages})
            raise serializers.ValidationError({field: messages})
        body = {"id": outcome.event_id, "status": outcome.status, "event_status": outcome.event_status}
        return Response(body, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=EventBatchSerializer,
        responses={
            200: EventBatchResponseSerializer,
            400: OpenApiResponse(description='The body is not {"events": [1 to 1000 events]}; names events.'),
        },
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="batch",
        pagination_class=None,
        filterset_class=None,
        parser_classes=[DepthLimitedJSONParser],
    )
    def batch(self, request, *args, **kwargs):
        """Record up to 1,000 events, each with its own idempotency_key; answered once they are stored.

        Each event gets a result at its index: accepted, replayed (its key was used before with
        the same event: nothing new), unknown_contact (kept; no contact has its phone) or an
        error naming the field (400) or the reused key (422). Bad events never stop the good
        ones. Workers match the stored events within seconds; each fires each campaign once.
        """
        payload = request.data.get("events") if isinstance(request.data, dict) else None
        if not isinstance(payload, list) or not 1 <= len(payload) <= events.MAX_BATCH:
            raise serializers.ValidationError(
                {"events": [f"a list of 1 to {events.MAX_BATCH} events, each with its own idempotency_key"]}
            )
        items, refused = [], {}
        for index, data in enumerate(payload):
            body = {k: v for k, v in data.items() if k != "idempotency_key"} if isinstance(data, dict) else data
            try:
                items.append(events.event_clean(data, index=index, request_hash=request_fingerprint(body)))
            except DjangoValidationError as exc:
                refused[index] = events.Outcome(index, events.Outcome.ERROR, code=400, errors=exc.message_dict)
        stored = {outcome.index: outcome for outcome in events.events_store(items, actor=request.user.get_username())}
        results = [(refused.get(index) or stored[index]).as_dict() for index in range(len(payload))]
        counts = Counter(result["status"] for result in results)
        body = {
            "accepted": counts["accepted"],
            "replayed": counts["replayed"],
            "unknown_contact": counts["unknown_contact"],
            "errors": counts["error"],
            "results": results,
        }
        return Response(body, status=status.HTTP_200_OK)


def _wait(request) -> bool:
    value = request.query_params.get("wait", "true").strip().lower()
    if value in ("true", "1", "yes", ""):
        return True
    if value in ("false", "0", "no"):
        return False
    raise serializers.ValidationError({"wait": ["true or false"]})
