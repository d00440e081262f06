"""The campaigns app in the back office. Importing the package registers every ModelAdmin.

segments: the segment admin; campaign: the campaign admin and its actions (forms, inlines,
progress and confirm hold its parts); events: customer events; experiments, outcomes and
event_lists: the pieces the campaign and contact pages borrow.
"""

from campaigns.admin import campaign, events, segments

__all__ = ["campaign", "events", "segments"]
