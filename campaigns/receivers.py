"""Receivers of the signals messaging sends up (messaging never imports campaigns)."""

from __future__ import annotations

from campaigns.services import events


def on_inbound_message_received(sender, message_id: int, keyword: str | None = None, **kwargs) -> None:
    """An inbound message committed: fire the triggered campaign whose keyword it is, if any."""
    events.keyword_trigger(message_id, keyword)
