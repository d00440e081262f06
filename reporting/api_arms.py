"""Reporting API for experiments: each arm's figures and its differences against control and the best arm.

Read-only like the rest of reporting (Analysts and Staff may GET); no personal data in it.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from reporting import arms, exports_arms
from reporting.api import ExportQuerySerializer, ReportingView, _campaign_and_run, _query


class DifferenceSerializer(serializers.Serializer):
    versus = serializers.CharField(help_text="The arm compared with.")
    estimate = serializers.FloatField(
        allow_null=True, help_text="This arm minus the other: a proportion for rates, an amount for revenue."
    )
    low = serializers.FloatField(allow_null=True, help_text="95 % confidence interval, lower end.")
    high = serializers.FloatField(allow_null=True, help_text="95 % confidence interval, upper end.")
    significant = serializers.BooleanField(allow_null=True, help_text="True when the interval excludes zero.")
    sentence = serializers.CharField(help_text="The comparison in one plain sentence.")


class BestDifferenceSerializer(DifferenceSerializer):
    best = serializers.CharField(help_text="The arm leading on this metric.")


_RATES = "delivered, replies, clicks, conversions: recipients who did it / the arm's recipients"


class ArmSerializer(serializers.Serializer):
    arm = serializers.CharField(help_text='The variant id, or "control".')
    variant = serializers.IntegerField(allow_null=True)
    label = serializers.CharField()
    control = serializers.BooleanField(help_text="The control group: measured, sent nothing.")
    rollout = serializers.BooleanField(help_text="A test's winner sent to the rest of the audience (not compared).")
    weight = serializers.IntegerField(allow_null=True)
    template = serializers.CharField()
    recipients = serializers.IntegerField(help_text="Recipients assigned to the arm who were sendable (or held out).")
    sent = serializers.IntegerField()
    delivered = serializers.IntegerField()
    read = serializers.IntegerField()
    failed = serializers.IntegerField()
    replies = serializers.IntegerField(help_text="Recipients who replied at least once.")
    replies_total = serializers.IntegerField(help_text="Inbound messages from the arm's recipients after theirs.")
    opt_outs_72h = serializers.IntegerField()
    clicks = serializers.IntegerField(allow_null=True, help_text="Recipients who clicked (null: not measured).")
    conversions = serializers.IntegerField(allow_null=True, help_text="Recipients who converted (null: not measured).")
    revenue = serializers.DecimalField(max_digits=18, decimal_places=5, allow_null=True, coerce_to_string=True)
    cost = serializers.DecimalField(max_digits=18, decimal_places=5, allow_null=True, coerce_to_string=True)
    rates = serializers.DictField(child=serializers.FloatField(allow_null=True), help_text=_RATES)
    revenue_per_recipient = serializers.FloatField(allow_null=True)
    versus_control = serializers.DictField(child=DifferenceSerializer(), help_text="By metric.")
    versus_best = serializers.DictField(
        child=BestDifferenceSerializer(), help_text="By metric; the best arm is compared with the runner-up."
    )


class WinnerSerializer(serializers.Serializer):
    variant = serializers.IntegerField()
    label = serializers.CharField()
    picked_at = serializers.DateTimeField()
    how = serializers.CharField(help_text="auto or manual")
    by = serializers.CharField()
    significant = serializers.BooleanField(
        allow_null=True, help_text="Whether the winner led every other arm significantly (95 %) when picked."
    )
    sentence = serializers.CharField(help_text="How it was picked and whether its lead was significant, in words.")


class CampaignArmsSerializer(serializers.Serializer):
    campaign = serializers.IntegerField()
    runs = serializers.ListField(child=serializers.IntegerField())
    experiment = serializers.BooleanField(help_text="False when the campaign has no variants.")
    control_share = serializers.IntegerField(help_text="Percent of the audience held out.")
    metric = serializers.CharField(help_text="The metric the winner is (or would be) picked on.")
    waiting_for_winner = serializers.IntegerField(help_text="Recipients waiting for a test's winner.")
    winner = WinnerSerializer(allow_null=True)
    arms = ArmSerializer(many=True)


class CampaignArmsView(ReportingView):
    @extend_schema(
        operation_id="reporting_campaign_arms",
        parameters=[ExportQuerySerializer],
        responses=CampaignArmsSerializer,
    )
    def get(self, request, pk: int):
        """Each arm of the campaign's experiment: its funnel, rates, and differences with 95 % intervals."""
        campaign, run = _campaign_and_run(pk, _query(ExportQuerySerializer, request).get("run"))
        return Response(CampaignArmsSerializer(arms.campaign_arms(campaign, run=run)).data)


class CampaignArmsExportView(ReportingView):
    @extend_schema(
        operation_id="reporting_campaign_arms_export",
        parameters=[ExportQuerySerializer],
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request, pk: int):
        """One CSV row per arm with its figures and differences; cells escaped against formulas."""
        campaign, run = _campaign_and_run(pk, _query(ExportQuerySerializer, request).get("run"))
        return exports_arms.campaign_arms_csv(campaign, run=run)
