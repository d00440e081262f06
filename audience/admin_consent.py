"""The admin's consent overrides: a contact's consent change with evidence, bulk refusals, suppression lifts.

Every rule is the consent service's (``audience.services``): these forms only
carry the evidence to it and show its refusals on the fields they name.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from audience import services
from audience.models import ConsentSource, ConsentStatus, Contact, Suppression
from config.privacy_admin import PersonalFieldsMixin

REFUSED_SHOWN = 50
DOCUMENT_HELP = (
    "A reference to the signed form or document in which the person gave consent. Required to opt in someone "
    "whose opt-out came from a STOP keyword, the provider (the carrier reported an opt-out) or the suppression list."
)
REASON_HELP = "Why the change is made, in your words. Required in the same cases."


def _errors_onto(form: forms.Form, exc: ValidationError, fields: dict[str, str]) -> None:
    """Put a service's errors on the form fields they name (``fields``: service name -> form field)."""
    for name, errors in exc.message_dict.items():
        form.add_error(fields.get(name), errors)


class ContactAdminForm(forms.ModelForm):
    """The contact form, with a consent change and its evidence (change page only)."""

    consent_change = forms.ChoiceField(
        label="Change consent to",
        choices=[("", "Leave as it is"), *ConsentStatus.choices],
        required=False,
    )
    consent_document = forms.CharField(label="Evidence: document", required=False, help_text=DOCUMENT_HELP)
    consent_reason = forms.CharField(
        label="Evidence: reason", required=False, widget=forms.Textarea(attrs={"rows": 3}), help_text=REASON_HELP
    )
    CONSENT_FIELDS = ("consent_change", "consent_document", "consent_reason")
    SERVICE_FIELDS = {"status": "consent_change", "document": "consent_document", "reason": "consent_reason"}
    actor = None  # the user saving the form, set by ContactAdmin.get_form

    class Meta:
        model = Contact
        fields = ("phone", "name", "email", "channel", "locale", "timezone", "attributes")

    def consent_evidence(self) -> dict:
        evidence = {"door": "admin form"}
        for name in ("document", "reason"):
            value = (self.cleaned_data.get(f"consent_{name}") or "").strip()
            if value:
                evidence[name] = value
        return evidence

    def clean(self):
        cleaned = super().clean()
        to_status = cleaned.get("consent_change")
        if to_status and self.instance.pk:
            try:
                services.consent_change_check(
                    self.instance,
                    to_status=to_status,
                    source=ConsentSource.ADMIN,
                    actor=self.actor,
                    evidence=self.consent_evidence(),
                )
            except ValidationError as exc:
                _errors_onto(self, exc, self.SERVICE_FIELDS)
        return cleaned


def consent_change_from_form(request, contact: Contact, form: ContactAdminForm) -> None:
    """Apply the form's consent change (already checked by the form) through the consent service."""
    to_status = form.cleaned_data.get("consent_change")
    if to_status:
        services.consent_change(
            contact,
            to_status=to_status,
            source=ConsentSource.ADMIN,
            actor=request.user,
            evidence=form.consent_evidence(),
        )


def refused_message(refused: list[tuple[Contact, services.ConsentEvidenceRequired]]):
    """The admin message naming the contacts a bulk opt-in left opted out, each linked to its page."""
    shown = refused[:REFUSED_SHOWN]
    links = format_html_join(
        ", ",
        '<a href="{}">#{}</a> ({})',
        (
            (
                reverse("admin:audience_contact_change", args=[contact.pk]),
                contact.pk,
                services.OVERRIDE_ORIGINS[refusal.origin],
            )
            for contact, refusal in shown
        ),
    )
    more = f" and {len(refused) - len(shown)} more" if len(refused) > len(shown) else ""
    return format_html(
        "{} contact(s) were not opted in: their opt-out came from a STOP keyword, the provider or the "
        "suppression list, so opting them in needs evidence (a signed document and a reason). Open each "
        "one to record it: {}{}.",
        len(refused),
        links,
        more,
    )


class SuppressionLiftForm(forms.Form):
    document = forms.CharField(label="Evidence: document", required=False, help_text=DOCUMENT_HELP)
    reason = forms.CharField(label="Evidence: reason", required=False, widget=forms.Textarea, help_text=REASON_HELP)


class SuppressionAdmin(PersonalFieldsMixin, admin.ModelAdmin):
    """The suppression list. Deleting an entry is lifting it: with evidence, audited as a consent event."""

    personal_fields = {"evidence": "json"}
    list_display = ("phone_hash", "reason", "source", "created_at")
    search_fields = ("phone_hash",)
    lift_template = "admin/audience/suppression/lift.html"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # a bulk delete would skip the evidence
        return actions

    def delete_queryset(self, request, queryset):
        raise PermissionDenied("suppression entries are lifted one at a time, with evidence")

    def delete_view(self, request, object_id, extra_context=None):
        suppression = self.get_object(request, object_id)
        if suppression is None:
            self.message_user(request, "That suppression entry no longer exists.", messages.WARNING)
            return redirect("admin:audience_suppression_changelist")
        if not self.has_delete_permission(request, suppression):
            raise PermissionDenied
        form = SuppressionLiftForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                services.suppression_lift(
                    suppression, actor=request.user, evidence={"door": "admin", **form.cleaned_data}
                )
            except ValidationError as exc:
                _errors_onto(form, exc, {"document": "document", "reason": "reason"})
            else:
                self.message_user(request, "The suppression entry was lifted; the consent audit records it.")
                return redirect("admin:audience_suppression_changelist")
        context = {
            **self.admin_site.each_context(request),
            "title": "Lift a suppression entry",
            "opts": self.model._meta,
            "object": suppression,
            "form": form,
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.lift_template, context)


admin.site.register(Suppression, SuppressionAdmin)
