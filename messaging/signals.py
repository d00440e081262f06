"""Signals messaging sends to the apps above it (campaigns, reporting).

The status and inbound signals are sent after the transaction that caused them commits, so a receiver
always reads committed rows. Receivers take keyword arguments only.
"""

from __future__ import annotations

from django.dispatch import Signal

# message_id: int, old: str, new: str (MessageStatus values), source_type_id: int | None (the
# ContentType of Message.source, None for a message nothing caused, such as a transactional send).
message_status_changed = Signal()

# message_id: int, keyword: str | None (a Keyword value such as "stop", or None for plain text).
inbound_message_received = Signal()

# message_ids: list[int]. Many messages changed status at once (a batch of campaign sends: claimed,
# sent, retried, skipped or failed), in place of one message_status_changed each; also sent for
# one campaign message whose status times moved without its status (earlier evidence arriving late).
message_statuses_changed = Signal()

# template: MessageTemplate, just saved by staff. Sent at once (not after commit): each receiver
# returns a list of warnings for the person who saved it (campaigns: most of an audience lacks a
# variable the template now needs).
template_saved = Signal()

# message_ids: list[int]. These messages' prices became known (fetched from the provider after
# their final status): the cost figures move, their statuses do not.
message_prices_changed = Signal()
