"""The cost estimate as the API shows it (the dry run, the campaign summary): the schema's one definition."""

from __future__ import annotations

from rest_framework import serializers


class CostTotalSerializer(serializers.Serializer):
    currency = serializers.CharField(help_text="ISO 4217; amounts in different currencies are never added.")
    amount = serializers.DecimalField(max_digits=16, decimal_places=5, coerce_to_string=True)
    messages = serializers.IntegerField()
    units = serializers.IntegerField(help_text="SMS segments, or WhatsApp messages.")


class CostCountrySerializer(serializers.Serializer):
    country = serializers.CharField(help_text="ISO 3166 code of the destination, or 'unknown'.")
    messages = serializers.IntegerField()
    units = serializers.IntegerField()
    unit_price = serializers.DecimalField(max_digits=10, decimal_places=5, coerce_to_string=True)
    currency = serializers.CharField()
    amount = serializers.DecimalField(max_digits=16, decimal_places=5, coerce_to_string=True)


class CostUnpricedSerializer(serializers.Serializer):
    messages = serializers.IntegerField(help_text="Recipients whose destination has no price in the price table.")
    countries = serializers.ListField(child=serializers.CharField())


class CostEstimateSerializer(serializers.Serializer):
    channel = serializers.CharField()
    unit = serializers.ChoiceField(choices=["segment", "message"], help_text="What one unit price buys.")
    messages = serializers.IntegerField()
    units = serializers.IntegerField(help_text="Rendered SMS segments (GSM-7 or UCS-2) per recipient, summed.")
    rendered = serializers.IntegerField(
        help_text="Messages rendered to count segments: all of them, or a sample past COST_ESTIMATE_RENDER_MAX."
    )
    totals = CostTotalSerializer(many=True, help_text="Per currency: the segments or messages times the price.")
    by_country = CostCountrySerializer(many=True, help_text="The costliest destinations (at most 20).")
    unpriced = CostUnpricedSerializer()
