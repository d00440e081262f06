"""Admin pieces that keep the events list fast at 100M rows, and a contact's latest events on its page.

The changelist never scans the table: event names come from a skip scan of the (name,
received_at) index, a search is an exact lookup by index, the count stops at COUNT_CAP, and there
is no date hierarchy (its year and month links are a DISTINCT over every row).
"""

from __future__ import annotations

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Q
from django.forms.models import BaseInlineFormSet
from django.utils.functional import cached_property

from audience.models import Contact
from audience.phones import InvalidPhone, normalize_phone
from campaigns.models import Event
from config.privacy_admin import PersonalFieldsMixin

COUNT_CAP = 10_000  # past this many rows the list says "10000" and offers that many pages; filter to narrow
NAMES_SHOWN = 200
LATEST_ON_CONTACT = 20

# Distinct names by hopping through the index: one probe per name, not a scan of every event.
_NAMES_SQL = """
WITH RECURSIVE names AS (
    (SELECT name FROM campaigns_event ORDER BY name LIMIT 1)
    UNION ALL
    SELECT (SELECT e.name FROM campaigns_event e WHERE e.name > names.name ORDER BY e.name LIMIT 1)
    FROM names WHERE names.name IS NOT NULL
)
SELECT name FROM names WHERE name IS NOT NULL LIMIT %s
"""


def event_names(limit: int = NAMES_SHOWN) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(_NAMES_SQL, [limit])
        return [row[0] for row in cursor.fetchall()]


class EventNameFilter(admin.SimpleListFilter):
    title = "name"
    parameter_name = "name"

    def lookups(self, request, model_admin):
        return [(name, name) for name in event_names()]

    def queryset(self, request, queryset):
        return queryset.filter(name=self.value()) if self.value() else queryset


class EventSearchMixin:
    """Search by exact name, idempotency key or the contact's phone (any spelling): index lookups only."""

    search_help_text = "An event name, an idempotency key, or a contact's phone."

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        found = Q(name=term) | Q(idempotency_key=term)
        try:
            phone = normalize_phone(term)
        except InvalidPhone:
            phone = None
        if phone:
            found |= Q(contact_id__in=list(Contact.objects.filter(phone=phone).values_list("pk", flat=True)))
        return queryset.filter(found), False


class CappedCountPaginator(Paginator):
    """Counts at most COUNT_CAP rows (a LIMITed subquery): a count over 100M events would take minutes."""

    @cached_property
    def count(self) -> int:
        return self.object_list.order_by()[:COUNT_CAP].count()


class _LatestFormSet(BaseInlineFormSet):
    """Shown, never submitted: the contact's form saves whether or not a POST carries this formset."""

    def __init__(self, data=None, files=None, **kwargs):
        super().__init__(None, None, **kwargs)

    def is_valid(self) -> bool:
        return True

    def get_queryset(self):
        queryset = super().get_queryset()
        if not queryset.query.is_sliced:
            queryset = self._queryset = queryset[:LATEST_ON_CONTACT]
        return queryset


class ContactEventInline(PersonalFieldsMixin, admin.TabularInline):
    """On a contact's page: its latest events, and a link to all of them in the events list."""

    model = Event
    formset = _LatestFormSet
    template = "admin/campaigns/event/contact_inline.html"
    personal_fields = {"properties": "json"}
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("name", "occurred_at", "received_at", "properties")
    readonly_fields = fields
    ordering = ("-received_at", "-id")
    verbose_name_plural = f"events (the latest {LATEST_ON_CONTACT})"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
