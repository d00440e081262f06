"""REST API: a contact's event history, ``GET /api/v1/contacts/{id}/events/`` (Staff and Analysts read)."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination

from audience.models import Contact
from campaigns import selectors
from campaigns.api.events import EventSerializer
from campaigns.models import Event
from config.api import UtcIsoDateTimeFilter


class ContactEventSerializer(EventSerializer):
    """The events list's serializer (properties masked for those without the full view), fewer fields."""

    class Meta(EventSerializer.Meta):
        fields = ["id", "name", "properties", "occurred_at", "received_at", "matched_campaigns"]
        read_only_fields = fields


class ContactEventFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(help_text="Only events of this name, e.g. order_shipped.")
    occurred_after = UtcIsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    occurred_before = UtcIsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt")
    received_after = UtcIsoDateTimeFilter(field_name="received_at", lookup_expr="gte")
    received_before = UtcIsoDateTimeFilter(field_name="received_at", lookup_expr="lt")

    class Meta:
        model = Event
        fields = ["name"]


class ContactEventPagination(CursorPagination):
    ordering = ("-received_at", "-id")
    page_size_query_param = "page_size"
    max_page_size = 500


@extend_schema(responses={200: ContactEventSerializer(many=True), 404: OpenApiResponse(description="No such contact.")})
class ContactEventHistoryView(generics.ListAPIView):
    """A contact's events, the latest received first, cursor-paginated; each says when it occurred.

    Analysts see phone numbers and e-mail addresses in the properties masked.
    """

    serializer_class = ContactEventSerializer
    pagination_class = ContactEventPagination
    filterset_class = ContactEventFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator, without a contact
            return Event.objects.none()
        contact_id = int(self.kwargs["contact_id"])
        if not Contact.objects.filter(pk=contact_id).exists():
            raise NotFound(f"no contact with id {contact_id}")
        return selectors.contact_event_history(contact_id)
