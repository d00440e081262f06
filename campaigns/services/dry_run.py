"""What a launch would do, without writing anything: the audience, exclusions, duration and cost."""

from __future__ import annotations

import datetime as dt
import time

from django.utils import timezone

from campaigns.models import (
    Campaign,
    RecipientState,
)
from campaigns.services import cost, estimates
from campaigns.services import snapshot as snapshots
from campaigns.services.lifecycle import campaign_validate


def campaign_dry_run(
    campaign: Campaign, *, now: dt.datetime | None = None, samples: int = 5, with_cost: bool = True
) -> dict:
    """What a launch at ``now`` would snapshot, without writing anything (``with_cost``: and its cost)."""
    from audience.models import Contact
    from messaging.services.templates import template_preview

    now = now or timezone.now()
    campaign_validate(campaign)
    began = time.monotonic()
    snapshot = snapshots.snapshot_query(campaign, now)
    rows = snapshots.snapshot_summary(snapshot)
    snapshot_seconds = time.monotonic() - began  # about what the launch's snapshot will take
    by_state: dict[str, int] = {}
    excluded: dict[str, int] = {}
    held_until = None
    for state, reason, count, _first, last in rows:
        by_state[state] = by_state.get(state, 0) + count
        if state == RecipientState.SKIPPED:
            excluded[reason] = excluded.get(reason, 0) + count
        if state == RecipientState.HELD and last is not None:
            held_until = last if held_until is None else max(held_until, last)
    mps = campaign.mps or campaign.sender.effective_mps
    to_send = by_state.get(RecipientState.PENDING, 0) + by_state.get(RecipientState.HELD, 0)
    sample_ids = snapshots.snapshot_sample(snapshot, samples) if samples else []
    contacts = Contact.objects.in_bulk(sample_ids)
    rendered = []
    for contact_id in sample_ids:
        preview = template_preview(campaign.template, contact=contacts[contact_id])
        rendered.append({"contact": contact_id, "phone": contacts[contact_id].phone, **preview})
    return {
        "at": now.isoformat(),
        "audience": sum(by_state.values()),
        "to_send": to_send,
        "pending": by_state.get(RecipientState.PENDING, 0),
        "held": by_state.get(RecipientState.HELD, 0),
        "held_until": held_until.isoformat() if held_until else None,
        "excluded": excluded,
        "mps": mps,
        "estimated_seconds": round(snapshot_seconds + estimates.duration_estimate(to_send, mps, campaign.sender_id), 1),
        "cost": cost.snapshot_cost_estimate(campaign, snapshot) if with_cost else None,
        "samples": rendered,
    }
