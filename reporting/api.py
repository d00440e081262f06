"""Reporting and monitoring API: message statuses, campaign summaries, the inbound stream, the dashboard.

Read-only: Analysts and Staff may GET everything (config.roles.StaffWriteAnalystRead). Phone
numbers are masked unless the user holds ``audience.see_full_phone`` (config.privacy) (Staff and superusers do).
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from audience.models import Channel, Contact
from campaigns.models import Campaign, CampaignRun
from config import privacy
from config.roles import is_staff_member
from messaging import selectors as messaging_selectors
from messaging.models import Direction, Message, MessageStatus, ProviderCallback, Sender
from reporting import exports, monitoring, selectors
from reporting.api_dashboard import DashboardSerializer
from reporting.api_summary import CampaignSummarySerializer

# --- Query parameters ----------------------------------------------------------------------


class MessageFilterSerializer(serializers.Serializer):
    campaign = serializers.IntegerField(required=False, min_value=1, help_text="Messages of this campaign's runs.")
    run = serializers.IntegerField(required=False, min_value=1, help_text="Messages of this campaign run.")
    sender = serializers.IntegerField(required=False, min_value=1)
    channel = serializers.ChoiceField(choices=Channel.choices, required=False)
    status = serializers.ChoiceField(choices=MessageStatus.choices, required=False)
    contact = serializers.IntegerField(required=False, min_value=1)
    direction = serializers.ChoiceField(choices=Direction.choices, required=False)
    created_after = serializers.DateTimeField(required=False, help_text="ISO 8601; created at or after.")
    created_before = serializers.DateTimeField(required=False, help_text="ISO 8601; created before.")

    _MODELS = {"campaign": Campaign, "run": CampaignRun, "sender": Sender, "contact": Contact}

    def validate(self, attrs):
        for name, model in self._MODELS.items():
            if name in attrs and not model.objects.filter(pk=attrs[name]).exists():
                raise ValidationError({name: [f"no {model._meta.verbose_name} with id {attrs[name]}"]})
        after, before = attrs.get("created_after"), attrs.get("created_before")
        if after and before and after >= before:
            raise ValidationError({"created_before": ["must be later than created_after"]})
        return attrs


class SummaryQuerySerializer(serializers.Serializer):
    run = serializers.IntegerField(required=False, min_value=1, help_text="One run; all runs when absent.")
    bucket = serializers.ChoiceField(choices=selectors.BUCKETS, default="hour", help_text="Timeline bucket.")


class ExportQuerySerializer(serializers.Serializer):
    run = serializers.IntegerField(required=False, min_value=1, help_text="One run; all runs when absent.")


class InboundQuerySerializer(serializers.Serializer):
    since = serializers.CharField(
        required=False,
        help_text="Polling cursor: a message id (the `next_since` of the previous answer) or an ISO 8601 time.",
    )
    channel = serializers.ChoiceField(choices=Channel.choices, required=False)
    kind = serializers.ChoiceField(choices=monitoring.InboundKind.choices, required=False)
    contact = serializers.IntegerField(required=False, min_value=1)
    sender = serializers.IntegerField(required=False, min_value=1)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=500, default=100)

    def validate_since(self, value: str):
        value = value.strip()
        if value.isdigit():
            return int(value)
        parsed = serializers.DateTimeField().to_internal_value(value)  # its error names the format
        return parsed


def _query(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


# --- Responses -----------------------------------------------------------------------------


class HistorySerializer(serializers.ModelSerializer):
    class Meta:
        model = ProviderCallback
        fields = ["id", "kind", "status", "error_code", "received_at", "applied_at"]


class ReportMessageSerializer(serializers.ModelSerializer):
    to_address = serializers.SerializerMethodField()
    from_address = serializers.SerializerMethodField()
    history = HistorySerializer(source="callbacks", many=True, read_only=True)

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
            "status",
            "skip_reason",
            "provider_sid",
            "error_code",
            "error_message",
            "segments",
            "price",
            "price_unit",
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
            "history",
        ]

    def _address(self, message: Message, value: str, personal: bool) -> str:
        return privacy.phone_shown(value, self.context.get("full_phones", False) or not personal)

    def get_to_address(self, message: Message) -> str:
        return self._address(message, message.to_address, message.direction == Direction.OUTBOUND)

    def get_from_address(self, message: Message) -> str:
        return self._address(message, message.from_address, message.direction == Direction.INBOUND)


class MessageStatusResponseSerializer(serializers.Serializer):
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="Every status with its count.")
    total = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = ReportMessageSerializer(many=True)


class InboundMessageSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    provider_sid = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    channel = serializers.CharField()
    contact = serializers.IntegerField(allow_null=True, source="contact_id")
    sender = serializers.IntegerField(allow_null=True, source="sender_id")
    from_address = serializers.CharField()
    to_address = serializers.CharField()
    body = serializers.CharField(allow_blank=True)
    num_media = serializers.IntegerField()
    media = serializers.ListField(child=serializers.DictField())
    kind = serializers.ChoiceField(choices=monitoring.InboundKind.choices)
    keyword = serializers.CharField(allow_blank=True)


class InboundResponseSerializer(serializers.Serializer):
    results = InboundMessageSerializer(many=True)
    next_since = serializers.IntegerField(allow_null=True, help_text="Pass as `since` to get what came after.")


# --- Views ---------------------------------------------------------------------------------


class ReportMessagePagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class ReportingView(GenericAPIView):
    """Reads only; filters are validated by the views' query serializers."""

    filter_backends = []
    pagination_class = None
    http_method_names = ["get", "head", "options"]

    def full_phones(self) -> bool:
        return privacy.can_see_full_phones(self.request.user)


class MessageStatusView(ReportingView):
    pagination_class = ReportMessagePagination
    serializer_class = ReportMessageSerializer

    @extend_schema(
        operation_id="reporting_messages_status",
        parameters=[
            MessageFilterSerializer,
            OpenApiParameter("cursor", str, description="The cursor of `next` or `previous`."),
            OpenApiParameter("page_size", int, description="Messages per page, at most 500 (default 50)."),
        ],
        responses=MessageStatusResponseSerializer,
    )
    def get(self, request):
        """Counts by status of the filtered messages, and a page of them with their status history."""
        queryset = selectors.message_status_queryset(**_query(MessageFilterSerializer, request))
        counts = selectors.message_status_counts(queryset)
        page = self.paginate_queryset(messaging_selectors.message_with_history(queryset))
        context = {**self.get_serializer_context(), "full_phones": self.full_phones()}
        return Response(
            {
                "counts": counts,
                "total": sum(counts.values()),
                "next": self.paginator.get_next_link(),
                "previous": self.paginator.get_previous_link(),
                "results": ReportMessageSerializer(page, many=True, context=context).data,
            }
        )


class MessageExportView(ReportingView):
    @extend_schema(
        operation_id="reporting_messages_export",
        parameters=[MessageFilterSerializer],
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request):
        """The filtered messages as CSV, streamed; cells escaped against spreadsheet formulas."""
        queryset = selectors.message_status_queryset(**_query(MessageFilterSerializer, request))
        return exports.messages_csv(queryset, full_phones=self.full_phones())


def _campaign_and_run(pk: int, run_id: int | None) -> tuple[Campaign, CampaignRun | None]:
    campaign = get_object_or_404(Campaign, pk=pk)
    if run_id is None:
        return campaign, None
    run = CampaignRun.objects.filter(pk=run_id, campaign=campaign).first()
    if run is None:
        raise ValidationError({"run": [f"campaign {campaign.pk} has no run with id {run_id}"]})
    return campaign, run


class CampaignSummaryView(ReportingView):
    @extend_schema(
        operation_id="reporting_campaign_summary",
        parameters=[SummaryQuerySerializer],
        responses=CampaignSummarySerializer,
    )
    def get(self, request, pk: int):
        """Audience, funnel, rates, failures by error code, opt-outs, replies, timing, timeline and cost."""
        query = _query(SummaryQuerySerializer, request)
        campaign, run = _campaign_and_run(pk, query.get("run"))
        summary = selectors.campaign_summary(campaign, run=run, bucket=query["bucket"])
        return Response(CampaignSummarySerializer(summary).data)


class CampaignExportView(ReportingView):
    @extend_schema(
        operation_id="reporting_campaign_export",
        parameters=[ExportQuerySerializer],
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request, pk: int):
        """One CSV row per recipient with its message's outcome, streamed; cells escaped against formulas."""
        campaign, run = _campaign_and_run(pk, _query(ExportQuerySerializer, request).get("run"))
        return exports.campaign_results_csv(campaign, run=run, full_phones=self.full_phones())


class InboundView(ReportingView):
    @extend_schema(
        operation_id="monitoring_inbound",
        parameters=[InboundQuerySerializer],
        responses=InboundResponseSerializer,
    )
    def get(self, request):
        """Recent inbound messages, oldest first, each classified (opt_out, opt_in, help, media, reply)."""
        query = _query(InboundQuerySerializer, request)
        since = query.pop("since", None)
        messages = monitoring.inbound_list(
            since_id=since if isinstance(since, int) else None,
            since_at=None if isinstance(since, int) or since is None else since,
            **query,
        )
        full = self.full_phones()
        results = []
        for message in messages:
            kind, keyword = monitoring.inbound_kind(message.body, message.num_media)
            message.from_address = privacy.phone_shown(message.from_address, full)
            message.body = privacy.shown("text", message.body, full)
            message.kind, message.keyword = kind, keyword
            results.append(message)
        next_since = results[-1].pk if results else (since if isinstance(since, int) else None)
        data = {"results": InboundMessageSerializer(results, many=True).data, "next_since": next_since}
        return Response(data)


class DashboardView(ReportingView):
    @extend_schema(operation_id="monitoring_dashboard", responses=DashboardSerializer)
    def get(self, request):
        """Database, Redis, broker queues, Celery workers, beat, send and error rates, webhook lag, runs, totals."""
        return Response(DashboardSerializer(monitoring.dashboard(details=is_staff_member(request.user))).data)
