import logging
import time

from celery import shared_task
from django.utils import timezone

from campaigns.models import Campaign, ScheduleType
from campaigns.services import (
    CampaignError,
    campaign_launch,
    chains,
    dispatcher,
    event_retention,
    events,
    upkeep,
)
from campaigns.services.schedules import cron_tick

logger = logging.getLogger(__name__)


@shared_task(name="campaigns.tasks.campaign_fire", ignore_result=True)
def campaign_fire(campaign_id: int) -> int | None:
    """Fired by celery-beat at a campaign's scheduled time; safe to run twice (one run per tick)."""
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None:
        logger.warning("campaign %s fired but no longer exists", campaign_id)
        return None
    now = timezone.now()
    if campaign.schedule_type == ScheduleType.ONCE and campaign.send_at:
        scheduled_for = campaign.send_at
    elif campaign.schedule_type == ScheduleType.CRON and campaign.cron:
        scheduled_for = cron_tick(campaign.cron, campaign.cron_timezone, now)
    else:
        scheduled_for = now.replace(second=0, microsecond=0)
    try:
        run = campaign_launch(campaign, scheduled_for=scheduled_for, actor="celery-beat", now=now)
    except CampaignError as exc:
        logger.info("campaign %s not launched: %s", campaign_id, "; ".join(exc.messages))
        return None
    return run.pk


# --- Delivery (campaigns.services.dispatch) --------------------------------------------------


# A dispatcher sends batch after batch for up to this long, then queues itself again: fewer trips
# through the broker between batches, and a worker shutting down waits for at most one round. A
# fast sender's run has up to four dispatchers (chains_for), as many as a worker's threads: each
# round's end gives its thread back, so that what was queued meanwhile (event matchers, the
# transactional sends' drain) waits for at most a round, not for the whole run.
DISPATCH_ROUND_SECONDS = 5.0
# A Redis restart must not end a run's chain: publishing the next round waits for the broker.
REQUEUE_RETRY = {"max_retries": 60, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 2.0}


@shared_task(name="campaigns.run_dispatch", ignore_result=True)
def run_dispatch(run_id: int, chain: int = 0, token: str = "") -> int:
    """Send batches of a run for a while, then queue the next round; safe to run twice (claims skip locked rows).

    ``chain`` is this dispatcher's place among the run's (``dispatch.dispatch_start``), held with
    ``token``: a dispatcher whose place another took (it was presumed dead) stops. The next round
    is queued before this one waits for its last answers, so a slow request at the end of a
    round does not stall the run.
    """
    token = token or chains.chain_claim(run_id, chain) or ""
    if not token or not chains.chain_keep(run_id, chain, token):
        return 0
    deadline = time.monotonic() + DISPATCH_ROUND_SECONDS
    run_dispatcher = dispatcher.RunDispatcher(run_id)
    total, again = 0, None
    try:
        while chains.chain_keep(run_id, chain, token):
            claimed, again = run_dispatcher.batch()
            total += claimed
            if again != 0.0 or time.monotonic() >= deadline:
                break
        else:
            again = None  # another dispatcher took this place
        if again is not None:
            args = [run_id, chain, token]
            run_dispatch.apply_async(args=args, countdown=again or None, retry=True, retry_policy=REQUEUE_RETRY)
    finally:
        run_dispatcher.close()
        if again is None:
            chains.chain_release(run_id, chain, token)
    return total


@shared_task(name="campaigns.held_release", ignore_result=True)
def held_release() -> int:
    return upkeep.held_release()


@shared_task(name="campaigns.winners_pick", ignore_result=True)
def winners_pick() -> int:
    """Pick the winner of every test whose wait is over; safe twice (each pick is conditional)."""
    from campaigns.services import winner

    return sum(winner.winner_pick_auto(campaign_id) for campaign_id in winner.winners_due())


@shared_task(name="campaigns.recipients_reap", ignore_result=True)
def recipients_reap() -> int:
    return upkeep.recipients_reap()


@shared_task(name="campaigns.dispatch_upkeep", ignore_result=True)
def dispatch_upkeep() -> int:
    """Restart runs whose dispatchers went quiet, and complete runs whose recipients are all final."""
    return upkeep.runs_kick() + upkeep.runs_complete()


# --- Retention (campaigns.services.event_retention) -------------------------------------------


@shared_task(name="campaigns.event_retention_purge", ignore_result=True)
def event_retention_purge() -> dict[str, int]:
    """Delete events past RETENTION_EVENTS_DAYS (beat, hourly); safe to run twice."""
    done = event_retention.event_retention_purge()
    if any(done.values()):
        logger.info("event retention: %(deleted)s deleted, %(emptied)s emptied", done)
    return done


# --- Events (campaigns.services.events) -------------------------------------------------------


@shared_task(name="campaigns.events_match", ignore_result=True)
def events_match_task() -> int:
    """Match stored events until none is left for a second (up to 20 s, then again); safe to run twice."""
    events.events_kick_clear()
    deadline = time.monotonic() + 20.0
    matched, more = events.events_match_pending()
    while not more and time.monotonic() < deadline and events.events_linger():
        time.sleep(events.MATCH_GATHER)  # a trickle: let a batch gather
        found, more = events.events_match_pending()
        matched += found
    if more or time.monotonic() >= deadline:
        events_match_task.delay()
    return matched


@shared_task(name="campaigns.events_match_helper", ignore_result=True)
def events_match_helper() -> int:
    """A second matcher while there is a backlog: matches until none is left, then lets another start."""
    try:
        matched, _ = events.events_match_pending(seconds=20.0, wake_helper=False)
    finally:
        events.helper_done()
    return matched


@shared_task(name="campaigns.events_sweep", ignore_result=True)
def events_sweep() -> int:
    """Beat, every 10 s: match events whose matcher was never woken or died (a lost task, Redis down)."""
    matched, more = events.events_match_pending()
    if more:
        events_match_task.delay()
    return matched


@shared_task(name="campaigns.run_cost_estimate", ignore_result=True)
def run_cost_estimate(run_id: int) -> None:
    """A launched run's estimated cost, for the summary's estimated against actual; safe to run twice."""
    from campaigns.services import cost

    cost.run_cost_estimate(run_id)


@shared_task(name="campaigns.conversions_attribute", ignore_result=True)
def conversions_attribute() -> int:
    """Beat, every 10 s: attribute stored goal events to the campaign messages or clicks that earned them."""
    from campaigns.services.attribution import conversions_attribute as attribute

    return attribute()
