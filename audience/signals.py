"""Signals audience sends to the apps above it (messaging, campaigns).

``contact_erasing`` is sent inside the erasure's transaction, before the contact row goes, so
each app clears what it holds about the person in the same commit. Receivers take keyword
arguments only: contact_id (int) and phone (E.164 str).
"""

from __future__ import annotations

from django.dispatch import Signal

contact_erasing = Signal()

# contact_id: int, from_status: str, to_status: str (ConsentStatus values). Sent by
# services.consent_change after its transaction commits (reporting counts opt-outs with it).
consent_changed = Signal()
