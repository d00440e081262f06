"""The monitoring dashboard's answer (GET /api/v1/monitoring/dashboard), as the OpenAPI schema describes it."""

from __future__ import annotations

from rest_framework import serializers

from reporting import monitoring
from reporting.alerting.api import AlertsSerializer


class CheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    ms = serializers.FloatField(required=False)
    error = serializers.CharField(required=False)


class BrokerSerializer(CheckSerializer):
    depths = serializers.DictField(child=serializers.IntegerField(), required=False)
    age_seconds = serializers.FloatField(required=False, help_text="How old the depths are (refreshed by beat).")


class CelerySerializer(CheckSerializer):
    workers = serializers.ListField(child=serializers.CharField(), required=False)
    alive = serializers.BooleanField(required=False)
    age_seconds = serializers.FloatField(required=False, help_text="How old the ping's answer is (refreshed by beat).")


class BeatSerializer(serializers.Serializer):
    last_run_at = serializers.DateTimeField(allow_null=True)
    seconds_ago = serializers.FloatField(allow_null=True)


class RateSerializer(serializers.Serializer):
    sent = serializers.IntegerField()
    failed = serializers.IntegerField()
    per_minute = serializers.FloatField()
    error_rate = serializers.FloatField(allow_null=True)
    since = serializers.DateTimeField(help_text="Start of the window: the current minute and the N before it.")


class RatesSerializer(serializers.Serializer):
    def get_fields(self):
        return {label: RateSerializer() for label in monitoring.RATE_WINDOWS}


class WebhooksSerializer(serializers.Serializer):
    last_event_at = serializers.DateTimeField(allow_null=True)
    seconds_since_last_event = serializers.FloatField(allow_null=True)
    status_callbacks_5m = serializers.IntegerField()
    carrier_delay_p50_seconds = serializers.FloatField(allow_null=True)


class ActiveRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    campaign = serializers.IntegerField()
    campaign_name = serializers.CharField()
    status = serializers.CharField()
    started_at = serializers.DateTimeField()
    total = serializers.IntegerField()
    pending = serializers.IntegerField()
    held = serializers.IntegerField()
    sent = serializers.IntegerField()
    skipped = serializers.IntegerField()
    failed = serializers.IntegerField()
    unknown = serializers.IntegerField(help_text="Recipients whose message's outcome is unknown.")
    progress = serializers.FloatField(allow_null=True)
    messages_by_status = serializers.DictField(child=serializers.IntegerField())


class TotalsSerializer(serializers.Serializer):
    contacts = serializers.IntegerField()
    opted_out_contacts = serializers.IntegerField()
    messages_24h = serializers.IntegerField()
    outbound_24h = serializers.IntegerField()
    inbound_24h = serializers.IntegerField()


class DashboardSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    database = CheckSerializer()
    redis = CheckSerializer()
    broker = BrokerSerializer()
    celery = CelerySerializer()
    beat = BeatSerializer()
    send_rate = RatesSerializer()
    webhooks = WebhooksSerializer()
    active_runs = ActiveRunSerializer(many=True)
    totals = TotalsSerializer()
    counters_swept_at = serializers.DateTimeField(
        allow_null=True, help_text="Last sweep of the counters: changes made without a signal are counted by then."
    )
    alerts = AlertsSerializer(help_text="Alerts firing now and the latest 10 alerts and recoveries.")
