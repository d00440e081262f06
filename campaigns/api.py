"""REST API for segments (CRUD and the live preview), campaigns (CRUD and their actions) and events."""

from __future__ import annotations

from collections import Counter

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from audience import selectors as audience_selectors
from audience.models import Contact
from audience.phones import InvalidPhone
from campaigns import selectors, services
from campaigns.api_cost import CostEstimateSerializer
from campaigns.models import Campaign, CampaignAction, CampaignRun, Event, EventStatus, Segment, Variant
from campaigns.segments.rules import RuleError
from campaigns.services import SegmentError, events, outcomes
from config import privacy
from config.api import (
    IDEMPOTENCY_KEY_REUSED,
    MODEL_SERIALIZER_FIELDS,
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
from config.roles import is_analyst
from messaging.models import ResolutionAction

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
        return _service_call(
            services.segment_create,
            name=validated_data.get("name", ""),
            description=validated_data.get("description", ""),
            definition=validated_data.get("definition"),
            query=validated_data.get("query"),
            created_by=self.context["request"].user,
        )

    def update(self, instance, validated_data):
        return _service_call(services.segment_update, instance, data=validated_data)


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


def _service_call(function, *args, **kwargs):
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
        _service_call(services.segment_delete, instance)

    @extend_schema(request=PreviewSerializer, responses={200: dict})
    @action(detail=False, methods=["post"], permission_classes=[PreviewPermission])
    def preview(self, request):
        """Count the contacts a definition or query matches (and the opted-in among them), with a sample."""
        payload = PreviewSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        clean = _service_call(
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


class CampaignRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = CampaignRun
        fields = [
            "id",
            "scheduled_for",
            "status",
            "mps",
            "total",
            "pending",
            "held",
            "sending",
            "sent",
            "skipped",
            "failed",
            "unknown",
            "skipped_by_reason",
            "arm_sizes",
            "snapshot_seconds",
            "started_at",
            "finished_at",
        ]


class VariantSerializer(serializers.ModelSerializer):
    class Meta:
        model = Variant
        fields = ["id", "label", "template", "weight"]


class CampaignActionSerializer(serializers.ModelSerializer):
    class Meta:
        model = CampaignAction
        fields = ["action", "from_status", "to_status", "actor", "detail", "created_at"]


class CampaignSerializer(serializers.ModelSerializer):
    serializer_field_mapping = MODEL_SERIALIZER_FIELDS
    current_run = serializers.SerializerMethodField()
    periodic_task = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Campaign
        fields = [
            "id",
            "name",
            "kind",
            "template",
            "sender",
            "segment",
            "topic",
            "mps",
            "quiet_start",
            "quiet_end",
            "frequency_cap",
            "frequency_window",
            "validity",
            "schedule_type",
            "send_at",
            "cron",
            "cron_timezone",
            "trigger_event",
            "trigger_keyword",
            "trigger_conditions",
            "trigger_contact_rule",
            "link_params",
            "goal_event",
            "goal_conditions",
            "goal_window",
            "goal_model",
            "control_share",
            "winner_test_share",
            "winner_wait",
            "winner_metric",
            "winner_pick",
            "variants",
            "winner_variant",
            "winner_picked_at",
            "status",
            "periodic_task",
            "current_run",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "status",
            "periodic_task",
            "current_run",
            "created_at",
            "updated_at",
            "winner_variant",
            "winner_picked_at",
        ]

    variants = VariantSerializer(
        many=True, read_only=True, help_text="The experiment's arms (set in the admin); empty: no experiment."
    )

    trigger_contact_rule = JSONField(
        required=False,
        allow_null=True,
        help_text="Triggered campaigns: conditions on the contact, a JSON rule tree or a query string such as "
        'age >= 18 AND NOT topic = "vip". Stored as the tree.',
    )

    @extend_schema_field(CampaignRunSerializer(allow_null=True))
    def get_current_run(self, obj: Campaign):
        run = obj.runs.first()
        return CampaignRunSerializer(run).data if run else None

    def create(self, validated_data):
        return _service_call(services.campaign_create, actor=self.context["request"].user, **validated_data)

    def update(self, instance, validated_data):
        return _service_call(services.campaign_update, instance, actor=self.context["request"].user, **validated_data)


class DryRunSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    audience = serializers.IntegerField()
    to_send = serializers.IntegerField()
    pending = serializers.IntegerField()
    held = serializers.IntegerField()
    held_until = serializers.DateTimeField(allow_null=True)
    excluded = serializers.DictField(child=serializers.IntegerField())
    mps = serializers.IntegerField()
    estimated_seconds = serializers.FloatField(allow_null=True)
    cost = CostEstimateSerializer(help_text="Rendered segments per recipient times the price for its country.")
    samples = serializers.ListField(child=serializers.DictField())


class TestSendSerializer(serializers.Serializer):
    contact = serializers.CharField(help_text="Whose message to send: a contact id, or the contact's phone.")
    to = serializers.CharField(max_length=64, help_text="The number the test goes to (yours), any common spelling.")

    def validate_contact(self, value: str) -> Contact:
        try:
            found = audience_selectors.contact_by_id_or_phone(value)
        except InvalidPhone:
            found = None
        if found is None:
            raise serializers.ValidationError(f"no contact with id or phone {value.strip()!r}")
        return found


class TestSentSerializer(serializers.Serializer):
    to = serializers.CharField()
    text = serializers.CharField()
    provider_sid = serializers.CharField()


class UnknownOutcomesRequestSerializer(serializers.Serializer):
    action = serializers.ChoiceField(
        choices=ResolutionAction.choices,
        help_text="lookup: ask the provider now; resend: send again (a deliberate new attempt; reopens a completed "
        "run); fail: mark them failed.",
    )
    run = serializers.IntegerField(required=False, min_value=1, help_text="Only this run's unknown outcomes.")
    messages = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        allow_empty=False,
        max_length=10_000,
        help_text="Only these messages (each must be an unknown outcome of the campaign, and of `run` if given).",
    )


class UnknownOutcomesResultSerializer(serializers.Serializer):
    action = serializers.CharField()
    run = serializers.IntegerField(allow_null=True)
    messages = serializers.IntegerField(help_text="How many messages the action was applied to.")
    by_status = serializers.DictField(child=serializers.IntegerField(), help_text="Their statuses afterwards.")
    remaining = serializers.IntegerField(help_text="Unknown outcomes left for another lookup request.")


class CampaignPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size_query_param = "page_size"
    max_page_size = 200


class CampaignViewSet(viewsets.ModelViewSet):
    """Campaigns and their actions: schedule, launch, pause, resume, cancel and dry run."""

    serializer_class = CampaignSerializer
    pagination_class = CampaignPagination
    filterset_fields = ["status", "kind"]
    queryset = (
        Campaign.objects.select_related("periodic_task").prefetch_related("variants").order_by("-created_at", "-id")
    )
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def perform_destroy(self, instance):
        _service_call(services.campaign_delete, instance)

    def _act(self, function, request):
        campaign = self.get_object()
        _service_call(function, campaign, actor=request.user)
        campaign.refresh_from_db()
        return Response(CampaignSerializer(campaign, context=self.get_serializer_context()).data)

    @extend_schema(request=None, responses=CampaignSerializer)
    @action(detail=True, methods=["post"])
    def schedule(self, request, pk=None):
        """Schedule the campaign as configured (send now launches at once)."""
        return self._act(services.campaign_schedule, request)

    @extend_schema(request=None, responses=CampaignRunSerializer)
    @action(detail=True, methods=["post"])
    def launch(self, request, pk=None):
        """Launch a run now: snapshots the recipients. A double click returns the same run."""
        campaign = self.get_object()
        run = _service_call(services.campaign_launch, campaign, actor=request.user)
        return Response(CampaignRunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=CampaignSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        return self._act(services.campaign_pause, request)

    @extend_schema(request=None, responses=CampaignSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._act(services.campaign_resume, request)

    @extend_schema(request=None, responses=CampaignSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return self._act(services.campaign_cancel, request)

    @extend_schema(request=None, responses={201: CampaignSerializer})
    @action(detail=True, methods=["post"])
    def duplicate(self, request, pk=None):
        """A new draft with this campaign's settings, named "<name> (copy)"; how a finished campaign is sent again."""
        copy = _service_call(services.campaign_duplicate, self.get_object(), actor=request.user)
        return Response(CampaignSerializer(copy, context=self.get_serializer_context()).data, status=201)

    @extend_schema(request=TestSendSerializer, responses={200: TestSentSerializer})
    @action(detail=True, methods=["post"], url_path="test-send")
    def test_send(self, request, pk=None):
        """Send what a contact would get to your own number: marked as a test on the campaign's actions,
        counted in no report, cap or history."""
        campaign = self.get_object()
        payload = TestSendSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        sent = _service_call(
            services.campaign_test_send,
            campaign,
            contact=payload.validated_data["contact"],
            to=payload.validated_data["to"],
            actor=request.user,
        )
        return Response(TestSentSerializer(sent).data)

    @extend_schema(request=None, responses=DryRunSerializer)
    @action(detail=True, methods=["post"], url_path="dry-run")
    def dry_run(self, request, pk=None):
        """What a launch now would snapshot; sends and stores nothing."""
        campaign = self.get_object()
        result = _service_call(services.campaign_dry_run, campaign)
        for sample in result["samples"]:
            sample["phone"] = privacy.shown("phone", sample["phone"], privacy.request_sees_full(request))
        return Response(result)

    @extend_schema(
        request=UnknownOutcomesRequestSerializer,
        responses={
            200: UnknownOutcomesResultSerializer,
            400: OpenApiResponse(description="Refused (e.g. a cancelled run's messages cannot be resent); says why."),
        },
    )
    @action(detail=True, methods=["post"], url_path="unknown-outcomes")
    def unknown_outcomes(self, request, pk=None):
        """Resolve the campaign's (or one run's) messages whose outcome is unknown: look up, resend or fail (Staff)."""
        campaign = self.get_object()
        payload = UnknownOutcomesRequestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        run = None
        if "run" in data:
            run = campaign.runs.filter(pk=data["run"]).first()
            if run is None:
                raise serializers.ValidationError({"run": [f"campaign {campaign.pk} has no run {data['run']}"]})
        result = _service_call(
            outcomes.campaign_unknown_resolve,
            campaign,
            data["action"],
            actor=request.user,
            run=run,
            message_ids=data.get("messages"),
        )
        return Response(UnknownOutcomesResultSerializer(result).data)

    @extend_schema(responses=CampaignRunSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None)
    def runs(self, request, pk=None):
        campaign = self.get_object()
        return Response(CampaignRunSerializer(campaign.runs.all()[:200], many=True).data)

    @extend_schema(responses=CampaignActionSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None)
    def actions(self, request, pk=None):
        campaign = self.get_object()
        return Response(CampaignActionSerializer(campaign.actions.all()[:500], many=True).data)


# --- Events (triggered campaigns) ----------------------------------------------------------


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
