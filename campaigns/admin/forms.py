"""The campaign admin's forms: the campaign itself (with its trigger, goal and experiment) and a send test."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from campaigns import services
from campaigns.admin.experiments import (
    ExperimentFormMixin,
)
from campaigns.admin.segments import code_area, query_text
from campaigns.models import (
    CAMPAIGN_SETTINGS,
    Campaign,
)
from campaigns.services import arms
from config.json_limits import DepthLimitedJSONDecoder


class CampaignForm(ExperimentFormMixin, forms.ModelForm):
    class Meta:
        model = Campaign
        fields = ["name", *CAMPAIGN_SETTINGS]

    trigger_contact_rule = forms.CharField(
        required=False,
        label="Trigger contact rule",
        widget=code_area(2),
        help_text='Conditions on the contact in the segment language, e.g. age >= 18 AND NOT topic = "vip" '
        "(or a JSON rule tree). Empty: every contact.",
    )
    trigger_conditions = forms.JSONField(
        required=False,
        decoder=DepthLimitedJSONDecoder,
        label="Trigger property conditions",
        widget=code_area(3),
        help_text='All must hold for the event\'s properties, e.g. [{"property": "total", "op": "gte", "value": 50}]. '
        "Ops: eq, neq, in, not_in, contains, icontains, gt, gte, lt, lte, exists, not_exists.",
    )
    link_params = forms.JSONField(
        required=False,
        decoder=DepthLimitedJSONDecoder,
        label="Link parameters",
        widget=code_area(2),
        help_text='Added to every tracked link unless the link has them, e.g. {"utm_source": "sms", '
        '"utm_campaign": "spring"}.',
    )
    goal_conditions = forms.JSONField(
        required=False,
        decoder=DepthLimitedJSONDecoder,
        label="Goal property conditions",
        widget=code_area(2),
        help_text="All must hold for the goal event's properties, in the trigger conditions' language.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        send_at = self.fields.get("send_at")
        for part, words in zip(
            getattr(send_at.widget, "widgets", ()) if send_at else (), ("date", "time"), strict=False
        ):
            part.attrs["aria-label"] = f"Send at: {words}"  # the admin's split widget labels only the pair
        rule = self.instance.trigger_contact_rule if self.instance.pk else None
        if rule:
            self.initial["trigger_contact_rule"] = query_text(rule)
        for name in ("goal_window", "goal_model"):  # left empty: the model's default (3 days, last message)
            if name in self.fields:
                self.fields[name].required = False

    def clean_trigger_contact_rule(self) -> Any:
        text = (self.cleaned_data.get("trigger_contact_rule") or "").strip()
        if text.startswith("{"):
            try:
                return json.loads(text, cls=DepthLimitedJSONDecoder)
            except ValueError as exc:
                raise ValidationError(f"not valid JSON: {exc}") from None
        return text or None

    def clean_trigger_conditions(self) -> Any:
        return self.cleaned_data.get("trigger_conditions") or []

    def clean_goal_conditions(self) -> Any:
        return self.cleaned_data.get("goal_conditions") or []

    def clean_link_params(self) -> Any:
        return self.cleaned_data.get("link_params") or {}

    def clean_goal_window(self) -> Any:
        return self.cleaned_data.get("goal_window") or Campaign._meta.get_field("goal_window").get_default()

    def clean_goal_model(self) -> Any:
        return self.cleaned_data.get("goal_model") or Campaign._meta.get_field("goal_model").get_default()

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        if self.instance.pk:
            changes = {name: cleaned.get(name) for name in self.changed_data if name in cleaned}
            for field, errors in arms.arm_shares_frozen(self.instance, changes).items():
                self.add_error(field if field in self.fields else None, errors)
        candidate = Campaign(**{name: cleaned.get(name) for name in self.Meta.fields if name in cleaned})
        try:
            services.campaign_validate(candidate)
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, errors)
        return cleaned


class TestSendForm(forms.Form):
    contact = forms.CharField(
        label="As if to contact", help_text="A contact's phone or id: the message is rendered with their values."
    )
    to = forms.CharField(label="Send to", max_length=64, help_text="Your own number, in any common spelling.")

    def clean_contact(self):
        from audience.phones import InvalidPhone
        from audience.selectors import contact_by_id_or_phone

        value = self.cleaned_data["contact"]
        try:
            found = contact_by_id_or_phone(value)
        except InvalidPhone as exc:
            raise ValidationError(str(exc)) from None
        if found is None:
            raise ValidationError(f"No contact with id or phone {value.strip()!r}.")
        return found


# Irreversible actions: their button leads to a page that states what will happen, then asks.
