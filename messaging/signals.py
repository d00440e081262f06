"""Signals messaging sends to the apps above it (campaigns, reporting).

Both are sent after the transaction that caused them commits, so a receiver
always reads committed rows. Receivers take keyword arguments only.
"""

from __future__ import annotations

from django.dispatch import Signal

# message_id: int, old: str, new: str (MessageStatus values).
message_status_changed = Signal()

# message_id: int, keyword: str | None (a Keyword value such as "stop", or None for plain text).
inbound_message_received = Signal()
