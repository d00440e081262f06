"""How long a run will take: the dry run's estimate, and what completed runs teach it.

A paced run sends ``mps`` per pacing window; one faster than the platform sustains goes at the
platform's measured capacity, which big runs that went slower than their MPS allowed measure.
"""

from __future__ import annotations

import math

from django.conf import settings
from django.db.models import Max, Min

from campaigns.models import CampaignRun, Recipient, RecipientState, RunStatus
from messaging import pacing
from messaging.services import inflight

# Seconds from a launch to the first request beyond the snapshot: the dispatcher's task starts, claims, renders.
LAUNCH_OVERHEAD = 0.3
UNMEASURED_TAIL = 4  # a provider's 99th percentile, in means, until one is measured (log-normal, sigma ~0.8)
CAPACITY_MIN_RUN = 1000  # sends: smaller runs measure start-up more than throughput


def capacity_learn(run: CampaignRun) -> None:
    """A big run that went slower than its MPS allowed measured what the platform sustains.

    Its rate is taken over the span its recipients were sent in (what ``duration_estimate``
    divides by the capacity), not from the launch to the last answer.
    """
    run.refresh_from_db(fields=["sent", "status"])
    if run.status != RunStatus.COMPLETED or run.sent < CAPACITY_MIN_RUN:
        return
    span = Recipient.objects.filter(run=run, state=RecipientState.SENT).aggregate(
        first=Min("sent_at"), last=Max("sent_at")
    )
    if span["first"] is None:
        return
    rate = run.sent / max((span["last"] - span["first"]).total_seconds(), 0.001)
    paused = run.campaign.actions.filter(action="pause", created_at__gte=run.started_at).exists()
    if rate * 2 < run.mps and not paused:
        inflight.capacity_observe(rate)


def duration_estimate(count: int, mps: int, sender_id: int) -> float:
    """Seconds to send ``count`` messages at ``mps`` from launch to the last answer.

    Paced by the sender's log (``pacing``), ``mps`` leave per window, and a window lasts
    ``pacing.WINDOW``; a sender faster than the platform sustains goes at the platform's measured
    rate (``inflight.capacity``). The last of many answers comes back at about the tail of the
    provider's observed latency (its 99th percentile).
    """
    if count <= 0:
        return 0.0
    observed = inflight.latency_observed(sender_id)
    latency = observed.tail if observed else settings.DELIVERY_LATENCY_GUESS * UNMEASURED_TAIL
    rate = inflight.capacity()
    if mps and mps < rate:
        sending = (math.ceil(count / mps) - 1) * pacing.WINDOW
    else:
        sending = count / rate
    return LAUNCH_OVERHEAD + sending + latency
