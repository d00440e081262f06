"""REST API for campaigns: CRUD, their actions (schedule, launch, pause, cancel, duplicate), dry run, send test."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from audience import selectors as audience_selectors
from audience.models import Contact
from audience.phones import InvalidPhone
from campaigns import services
from campaigns.api.cost import CostEstimateSerializer
from campaigns.api.segments import service_call
from campaigns.models import CAMPAIGN_SETTINGS, Campaign, CampaignAction, CampaignRun, Variant
from campaigns.services import arms, outcomes
from config import privacy
from config.api import (
    MODEL_SERIALIZER_FIELDS,
    JSONField,
)
from messaging.models import ResolutionAction


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
        read_only_fields = ["id"]
        extra_kwargs = {"template": {"help_text": "A template of the sender's channel."}}


def variant_errors_flat(detail):
    """DRF's nested errors of ``variants`` as ``variants[i].field`` keys, as the service names them."""
    if not isinstance(detail, dict) or "variants" not in detail:
        return detail
    nested, flat = detail.pop("variants"), {}
    if isinstance(nested, list):
        nested = dict(enumerate(nested))
    for index, item in nested.items():
        if not isinstance(index, int):  # not a list at all, or too long
            flat.setdefault("variants", []).extend(item)
        elif isinstance(item, dict):
            for field, texts in item.items():
                key = f"variants[{index}]" if field == "non_field_errors" else f"variants[{index}].{field}"
                flat[key] = texts
        elif item:
            flat.setdefault(f"variants[{index}]", []).extend(item)
    return {**flat, **detail}


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
            *CAMPAIGN_SETTINGS,
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
        many=True,
        required=False,
        max_length=arms.MAX_VARIANTS,
        help_text=f"The experiment's arms: {arms.MIN_VARIANTS}-{arms.MAX_VARIANTS} variants with unique labels, "
        "or none (no experiment). Sent, the list replaces the stored one: a variant is matched by its label and "
        "keeps its id. Fixed once the campaign has launched. Errors name `variants[i].field`.",
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

    def to_internal_value(self, data):
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError(variant_errors_flat(exc.detail)) from None

    def _fields(self, validated_data) -> dict:
        if "variants" in validated_data:
            validated_data["variants"] = [
                (item["label"], item["template"], item.get("weight", 1)) for item in validated_data["variants"]
            ]
        return validated_data

    def create(self, validated_data):
        fields = self._fields(validated_data)
        return service_call(services.campaign_create, actor=self.context["request"].user, **fields)

    def update(self, instance, validated_data):
        fields = self._fields(validated_data)
        return service_call(services.campaign_update, instance, actor=self.context["request"].user, **fields)


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
        service_call(services.campaign_delete, instance)

    def _act(self, function, request):
        campaign = self.get_object()
        service_call(function, campaign, actor=request.user)
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
        run = service_call(services.campaign_launch, campaign, actor=request.user)
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
        copy = service_call(services.campaign_duplicate, self.get_object(), actor=request.user)
        return Response(CampaignSerializer(copy, context=self.get_serializer_context()).data, status=201)

    @extend_schema(request=TestSendSerializer, responses={200: TestSentSerializer})
    @action(detail=True, methods=["post"], url_path="test-send")
    def test_send(self, request, pk=None):
        """Send what a contact would get to your own number: marked as a test on the campaign's actions,
        counted in no report, cap or history."""
        campaign = self.get_object()
        payload = TestSendSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        sent = service_call(
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
        result = service_call(services.campaign_dry_run, campaign)
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
        result = service_call(
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
