"""Segments: saved audiences, each a rule tree compiled to one SQL query."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Segment(models.Model):
    """A saved audience: a rule tree (campaigns.segments.rules) compiled to one SQL query.

    ``definition`` is the canonical JSON tree and the one source of truth; ``query`` keeps the
    human string it was typed as, when it was typed (blank when the tree came as JSON).
    Written through campaigns.services, which validates both.
    """

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    definition = models.JSONField(help_text="The rule tree: all/any/not groups over field rules.")
    query = models.TextField(
        blank=True, help_text='The query string it was built from, e.g. age >= 18 AND city = "Nairobi".'
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            # An empty definition must never reach the compiler as "everyone".
            models.CheckConstraint(
                condition=models.Q(definition__has_any_keys=["all", "any", "not", "field"]),
                name="segment_definition_not_empty",
            ),
        ]

    def __str__(self) -> str:
        return self.name
