"""The segment admin: a rule typed as a query or JSON, its live count and a masked sample."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from campaigns import selectors, services
from campaigns.models import (
    Segment,
)
from campaigns.segments import rules
from campaigns.segments.query import to_query
from campaigns.segments.rules import RuleError
from campaigns.services import SegmentError
from config import privacy
from config.json_limits import DepthLimitedJSONDecoder
from config.privacy_admin import PersonalFieldsMixin, viewer_sees_full

SAMPLE_SIZE = 10


def code_area(rows: int) -> forms.Textarea:
    """A text area for rules and JSON: monospaced (the admin's ``segment-code`` style), no spell check."""
    return forms.Textarea(attrs={"rows": rows, "cols": 100, "spellcheck": "false", "class": "segment-code"})


class SegmentForm(forms.ModelForm):
    query = forms.CharField(
        required=False,
        widget=code_area(3),
        help_text=(
            'For example: age >= 18 AND city = "Nairobi" AND NOT topic = "vip"; '
            'signup_date after "30 days ago"; city in ("Nairobi", "Lagos"); email exists; '
            "age between 18 and 30. AND binds tighter than OR; use parentheses."
        ),
    )
    definition = forms.JSONField(
        required=False,
        decoder=DepthLimitedJSONDecoder,
        widget=code_area(8),
        help_text="Or the JSON rule tree (all / any / not / field-op-value); it is used when you edit it here.",
    )

    class Meta:
        model = Segment
        fields = ["name", "description", "query", "definition"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        instance = self.instance
        if not instance.pk or instance.definition is None:
            self.initial["definition"] = ""  # an empty box, not the word null
        if instance.pk and not instance.query and instance.definition:
            self.initial["query"] = query_text(instance.definition)
        self.rule_input: dict[str, Any] = {}

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        query = (data.get("query") or "").strip()
        edited_json = "definition" in self.changed_data and "query" not in self.changed_data
        self.rule_input = {"definition": data.get("definition")} if edited_json or not query else {"query": query}
        try:
            clean = services.segment_definition_clean(**self.rule_input)
        except SegmentError as exc:
            field = exc.detail["field"] if exc.detail["field"] in self.fields else None
            self.add_error(field, ValidationError(_error_html(exc)))
            return data
        data["definition"] = clean.definition
        return data


def query_text(definition: Any) -> str:
    """The query string for a stored tree; a tree that no longer validates is shown as its error."""
    try:
        return to_query(rules.to_json(rules.validate(definition)))
    except RuleError as exc:
        return f"(invalid: {exc})"


def _error_html(exc: SegmentError) -> str:
    detail = exc.detail
    if "excerpt" in detail:
        return format_html('{}<pre class="segment-error">{}</pre>', detail["message"].split("\n")[0], detail["excerpt"])
    return detail["message"]


def _sample_table(contacts) -> str:
    full = viewer_sees_full()
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
        (
            (
                privacy.shown("phone", c.phone, full),
                privacy.shown("name", c.name, full),
                c.consent_status,
                json.dumps(c.attributes, ensure_ascii=False)[:120],
            )
            for c in contacts
        ),
    )
    head = "<tr><th>phone</th><th>name</th><th>consent</th><th>attributes</th></tr>"
    return format_html('<table class="segment-sample"><thead>{}</thead><tbody>{}</tbody></table>', head, rows)


@admin.register(Segment)
class SegmentAdmin(PersonalFieldsMixin, admin.ModelAdmin):  # its sample of contacts is masked
    form = SegmentForm
    list_display = ("name", "rule_text", "created_by", "updated_at")
    search_fields = ("name", "description", "query")
    readonly_fields = ("audience", "created_by", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "description")}),
        ("Rule", {"fields": ("query", "definition")}),
        ("Audience", {"fields": ("audience",)}),
        ("History", {"fields": ("created_by", "created_at", "updated_at")}),
    )

    class Media:
        js = ("campaigns/segment_preview.js",)
        css = {"all": ("campaigns/segment_preview.css",)}

    def get_queryset(self, request):
        return selectors.segment_list()

    @admin.display(description="rule")
    def rule_text(self, obj: Segment) -> str:
        text = obj.query or query_text(obj.definition)
        return text if len(text) <= 100 else text[:97] + "..."

    @admin.display(description="matching contacts")
    def audience(self, obj: Segment | None) -> str:
        url = reverse("segment-preview")
        if obj is None or obj.pk is None:
            body = format_html("<p>{}</p>", "Type a query to see how many contacts match.")
        else:
            body = self._audience_body(obj)
        return format_html('<div id="segment-preview" data-url="{}" aria-live="polite">{}</div>', url, body)

    def _audience_body(self, obj: Segment) -> str:
        try:
            preview = selectors.segment_preview(obj, size=SAMPLE_SIZE)
        except RuleError as exc:
            return format_html('<p class="errornote">{}</p>', str(exc))
        summary = format_html(
            '<p class="segment-count"><strong>{}</strong> contacts match, {} of them opted in.</p>',
            preview["count"],
            preview["opted_in"],
        )
        return format_html("{}{}", summary, _sample_table(preview["sample"])) if preview["sample"] else summary

    def save_model(self, request, obj, form, change):
        data = {
            "name": form.cleaned_data["name"],
            "description": form.cleaned_data.get("description", ""),
            **form.rule_input,
        }
        try:
            if change:
                services.segment_update(obj, data=data)
            else:
                obj.pk = services.segment_create(**data, created_by=request.user).pk
        except ValidationError as exc:
            self.message_user(request, f"Not saved: {'; '.join(exc.messages)}", messages.ERROR)


# --- Campaigns -----------------------------------------------------------------------------
