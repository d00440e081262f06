"""What a launch or a cancel states before staff confirm it, and the verbs the campaign page offers."""

from __future__ import annotations

from campaigns import services
from campaigns.models import (
    Campaign,
    CampaignStatus,
)
from campaigns.services.cost import cost_words
from campaigns.services.lifecycle import skip_reason_label

FINISHED = (CampaignStatus.COMPLETED, CampaignStatus.CANCELLED, CampaignStatus.FAILED)


CONFIRMED_VERBS = {"launch": "Launch now", "cancel": "Cancel campaign"}


def duration_words(seconds: float) -> str:
    """About how long, in words: "about 21 minutes", "under a minute"."""
    if seconds < 60:
        return "under a minute"
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"about {minutes} minute{'s' if minutes != 1 else ''}"
    return f"about {seconds / 3600:.1f} hours"


def launch_facts(result: dict) -> list[tuple[str, str]]:
    facts = [
        ("Audience", f"{result['audience']} contacts"),
        ("Sent now", str(result["pending"])),
        ("Held by quiet hours", str(result["held"])),
    ]
    facts += [(f"Excluded: {skip_reason_label(reason).lower()}", str(n)) for reason, n in result["excluded"].items()]
    facts.append(
        ("Estimated duration", f"{duration_words(result['estimated_seconds'])} at {result['mps']} messages a second")
    )
    facts.append(("Estimated cost", cost_words(result.get("cost"))))
    return facts


def cancel_facts(campaign: Campaign) -> list[tuple[str, str]]:
    run = campaign.runs.first()
    if run is None:
        return [("Runs", "none yet: nothing has been sent")]
    waiting = run.pending + run.held
    return [("Sent so far", str(run.sent)), ("Still waiting, to be skipped", str(waiting)), ("Failed", str(run.failed))]


ACTIONS = {
    "schedule": services.campaign_schedule,
    "launch": services.campaign_launch,
    "pause": services.campaign_pause,
    "resume": services.campaign_resume,
    "cancel": services.campaign_cancel,
    "duplicate": services.campaign_duplicate,
}
