"""A campaign summary's answer (GET /api/v1/reporting/campaigns/{id}/summary), as the OpenAPI schema describes it."""

from __future__ import annotations

from rest_framework import serializers


class FailureSerializer(serializers.Serializer):
    error_code = serializers.CharField()
    meaning = serializers.CharField()
    count = serializers.IntegerField()
    by_status = serializers.DictField(child=serializers.IntegerField())


class CostSerializer(serializers.Serializer):
    currency = serializers.CharField(allow_null=True)
    amount = serializers.DecimalField(max_digits=16, decimal_places=5, coerce_to_string=True)
    priced_messages = serializers.IntegerField()


class CostCurrencySerializer(serializers.Serializer):
    currency = serializers.CharField(allow_null=True)
    estimated = serializers.DecimalField(
        max_digits=16, decimal_places=5, coerce_to_string=True, allow_null=True, help_text="Null: no estimate in it."
    )
    estimated_messages = serializers.IntegerField()
    actual = serializers.DecimalField(
        max_digits=16,
        decimal_places=5,
        coerce_to_string=True,
        allow_null=True,
        help_text="Null: none charged.",
    )
    priced_messages = serializers.IntegerField()


class CostAgainstEstimateSerializer(serializers.Serializer):
    runs = serializers.IntegerField()
    runs_estimated = serializers.IntegerField(help_text="Runs whose estimate was made at launch.")
    unpriced_recipients = serializers.IntegerField(help_text="Recipients the estimate had no price for.")
    messages_awaiting_price = serializers.IntegerField(
        help_text="Messages without a price yet: in flight, or final and not yet fetched from the provider."
    )
    currencies = CostCurrencySerializer(many=True, help_text="Per currency; different currencies are never added.")


class SummaryMessagesSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    by_status = serializers.DictField(child=serializers.IntegerField())
    in_flight = serializers.IntegerField(help_text="pending, queued or sending")
    sent = serializers.IntegerField(help_text="reached the carrier: sent, delivered, read or undelivered")
    delivered = serializers.IntegerField(help_text="delivered or read")
    read = serializers.IntegerField()
    undelivered = serializers.IntegerField()
    failed = serializers.IntegerField()
    canceled = serializers.IntegerField()
    skipped_at_send = serializers.IntegerField(help_text="messages the send service refused (consent, window...)")
    unknown = serializers.IntegerField(
        help_text="the provider could not say whether it holds them; looked up until the give-up, then failed"
    )


class MoneySerializer(serializers.Serializer):
    currency = serializers.CharField(allow_null=True)
    amount = serializers.DecimalField(max_digits=20, decimal_places=4, coerce_to_string=True)


class ClicksSerializer(serializers.Serializer):
    unique = serializers.IntegerField(help_text="Messages whose tracked links were clicked at least once.")
    total = serializers.IntegerField(help_text="Every click; link-preview fetches and HEAD requests are not clicks.")
    click_rate = serializers.FloatField(allow_null=True, help_text="unique / sent")


class ConversionsSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Goal events attributed to the runs (docs/outcomes.md).")
    conversion_rate = serializers.FloatField(allow_null=True, help_text="conversions / sent")
    revenue = MoneySerializer(many=True, help_text="Sum of the conversions' values, per currency.")
    revenue_per_message = MoneySerializer(many=True, help_text="revenue / sent, per currency.")
    cost_per_conversion = MoneySerializer(many=True, help_text="cost / conversions, per currency of the prices.")


class TimelinePointSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    sent = serializers.IntegerField()
    delivered = serializers.IntegerField()
    read = serializers.IntegerField()
    failed = serializers.IntegerField()


class CampaignSummarySerializer(serializers.Serializer):
    campaign = serializers.IntegerField()
    runs = serializers.ListField(child=serializers.IntegerField())
    audience = serializers.IntegerField(help_text="Recipients snapshotted.")
    targeted = serializers.IntegerField(help_text="Recipients not skipped at the snapshot.")
    recipients = serializers.DictField(child=serializers.IntegerField(), help_text="Recipients by state.")
    held = serializers.IntegerField()
    skipped = serializers.IntegerField()
    skipped_by_reason = serializers.DictField(child=serializers.IntegerField())
    unknown = serializers.IntegerField(help_text="Recipients whose message's outcome is unknown (staff can resolve).")
    messages = SummaryMessagesSerializer()
    delivery_rate = serializers.FloatField(allow_null=True, help_text="delivered / sent")
    read_rate = serializers.FloatField(allow_null=True, help_text="read / delivered")
    failures = FailureSerializer(many=True, help_text="Failed and undelivered messages by error code.")
    cost = CostSerializer(many=True, help_text="Per currency, over messages whose price is known.")
    cost_against_estimate = CostAgainstEstimateSerializer(
        help_text="The estimate each run kept at launch against what the provider charged, per currency."
    )
    clicks = ClicksSerializer(help_text="Clicks on the runs' tracked links.")
    conversions = ConversionsSerializer()
    opt_outs_72h = serializers.IntegerField(help_text="Recipients who opted out within 72 h after their message.")
    replies = serializers.IntegerField(help_text="Inbound messages from recipients after their message.")
    repliers = serializers.IntegerField()
    median_seconds_to_deliver = serializers.FloatField(
        allow_null=True,
        help_text="Median time to deliver, in seconds, over the delivered (or read) messages: from when our "
        "request left for the provider (the message's sending_at; its sent_at if it has none) to delivered_at. "
        "delivered_at is the carrier's receipt time when the callback carries a plausible one (Twilio's "
        "RawDlrDoneDate, minute precision), else the earliest callback implying delivery (delivered or read). "
        "Null when no message was delivered. Read from counters: exact below 1,000 s for whole seconds, "
        "otherwise within 0.5 s or 0.5 %.",
    )
    bucket = serializers.CharField()
    timeline = TimelinePointSerializer(
        many=True,
        help_text="Messages per bucket by the time each status was reached: sent counts a message at its "
        "sent_at (the earliest evidence it was sent: a sent, delivered, read or undelivered callback).",
    )
