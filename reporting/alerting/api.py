"""GET /api/v1/monitoring/alerts: firing alerts and the latest alert notices (Analysts may read)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from reporting.alerting import selectors
from reporting.alerting.models import AlertKind, AlertNotice, AlertState


class FiringAlertSerializer(serializers.ModelSerializer):
    rule = serializers.CharField(source="rule.name")
    kind = serializers.ChoiceField(source="rule.kind", choices=AlertKind.choices)
    threshold = serializers.FloatField(source="rule.threshold")

    class Meta:
        model = AlertState
        fields = ["rule", "kind", "subject", "value", "threshold", "fired_at", "clear_since", "evaluated_at"]


class AlertNoticeSerializer(serializers.ModelSerializer):
    rule = serializers.CharField(source="rule.name")

    class Meta:
        model = AlertNotice
        fields = ["id", "kind", "rule", "subject", "value", "text", "created_at", "emailed_at", "posted_at"]


class AlertsSerializer(serializers.Serializer):
    firing = FiringAlertSerializer(many=True)
    recent = AlertNoticeSerializer(many=True, help_text="The latest 50 alerts and recoveries, newest first.")


class AlertsView(GenericAPIView):
    filter_backends = []
    pagination_class = None
    http_method_names = ["get", "head", "options"]
    serializer_class = AlertsSerializer

    @extend_schema(operation_id="monitoring_alerts", responses=AlertsSerializer)
    def get(self, request):
        """Alerts firing now (one per rule and subject) and the recent alert history."""
        return Response(AlertsSerializer(selectors.alerts_summary()).data)
