"""The price table in the admin: read by everyone with the view right, refreshed from the provider or
imported from CSV by Staff (the import is django-import-export's, with every bad row named)."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib import messages as notices
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from import_export.admin import ImportMixin

from messaging.models import PriceTable
from messaging.pricing import table


def _refresh_message(result: table.RefreshResult) -> tuple[str, int]:
    parts = [f"{len(result.updated)} prices refreshed from the provider"]
    if result.unlisted:
        parts.append(f"no price listed for {', '.join(result.unlisted)}")
    if result.failed:
        parts.append("could not ask for " + "; ".join(f"{c} ({why})" for c, why in result.failed.items()))
    level = notices.WARNING if (result.failed or result.unlisted) else notices.SUCCESS
    return "; ".join(parts) + ".", level


class RefreshForm(forms.Form):
    countries = forms.CharField(
        help_text="ISO country codes separated by spaces or commas, e.g. KE GB US. "
        "Filled with the countries of the contacts' numbers."
    )

    def clean_countries(self) -> list[str]:
        import phonenumbers

        codes = [code.strip().upper() for code in self.cleaned_data["countries"].replace(",", " ").split()]
        unknown = [code for code in codes if code not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise forms.ValidationError(f"not country codes: {', '.join(unknown)}")
        return codes


@admin.register(PriceTable)
class PriceTableAdmin(ImportMixin, admin.ModelAdmin):
    list_display = ("country", "channel", "price", "currency", "source", "refreshed_at")
    list_filter = ("channel", "source", "currency")
    search_fields = ("country",)
    readonly_fields = ("source", "refreshed_at")
    actions = ["refresh_selected"]
    resource_classes = [table.PriceTableResource]
    change_list_template = "admin/messaging/pricetable/change_list.html"

    def has_import_permission(self, request) -> bool:
        return self.has_add_permission(request) and self.has_change_permission(request)

    def save_model(self, request, obj, form, change):
        table.price_set(
            country=obj.country, channel=obj.channel, price=obj.price, currency=obj.currency, source="manual"
        )

    @admin.action(description="Refresh the selected countries from the provider", permissions=["change"])
    def refresh_selected(self, request, queryset):
        message, level = _refresh_message(table.price_table_refresh(list(queryset.values_list("country", flat=True))))
        self.message_user(request, message, level)

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_refresh": self.has_change_permission(request)}
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        refresh = path("refresh/", self.admin_site.admin_view(self.refresh_view), name="messaging_pricetable_refresh")
        return [refresh, *super().get_urls()]

    def refresh_view(self, request):
        if not self.has_change_permission(request):
            raise PermissionDenied
        form = RefreshForm(request.POST or None, initial={"countries": " ".join(table.audience_countries())})
        if request.method == "POST" and form.is_valid():
            message, level = _refresh_message(table.price_table_refresh(form.cleaned_data["countries"]))
            self.message_user(request, message, level)
            return HttpResponseRedirect(reverse("admin:messaging_pricetable_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Refresh prices from the provider",
            "form": form,
        }
        return TemplateResponse(request, "admin/messaging/pricetable/refresh.html", context)
