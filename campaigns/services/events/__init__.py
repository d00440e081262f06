"""Triggered campaigns: events (the API, inbound keywords) stored, matched to campaigns and answered by runs.

An event is stored once per idempotency key (a unique column decides, so two simultaneous
requests with one key make one event). The API stores events first (``events_store``: one
statement for a request, up to 1,000 events) and workers match them a batch at a time
(``events_match``); the waiting door and inbound keywords run the same matcher over their one
event before answering (``event_record``). A campaign matches by event name (or inbound
keyword), by its property conditions on the event, and by its contact rule (the segment
language) plus its segment and topic. Each match adds one Recipient, for that event, to the
campaign's long-lived run, decided by the rule a launch snapshot runs (``campaigns.services.eligibility``:
consent, frequency cap, missing variables, WhatsApp window, quiet hours, validity, here counted
from the event) and
a pending Message carrying the event's properties for ``{{ event.* }}``. The run's dispatcher
claims, paces and sends it like any other recipient; the run's counters move in the same
transaction as the rows. docs/events.md has the contract and why each event answers once.

The package, by concern: ``conditions`` (property conditions), ``triggers`` (a campaign's
trigger checked when saved), ``intake`` (checking and storing posted events), ``kick`` (waking
the matchers), ``matching`` (events to campaigns, in workers or in the request) and ``answers``
(recipients and messages in the campaigns' runs).
"""

from campaigns.services.events.answers import trigger_run
from campaigns.services.events.conditions import PROPERTY_OPS, condition_holds, conditions_clean, conditions_hold
from campaigns.services.events.intake import (
    MAX_BATCH,
    EventError,
    EventIn,
    Outcome,
    contact_create_for_event,
    event_clean,
    event_contact,
    events_store,
)
from campaigns.services.events.kick import (
    HELPER_KEY,
    KICK_KEY,
    MATCH_GATHER,
    MATCHER_LINGER,
    events_kick,
    events_kick_clear,
    events_linger,
    helper_done,
    helper_wake,
)
from campaigns.services.events.matching import (
    KEYWORD_EVENT,
    MATCH_BATCH,
    ClaimedEvent,
    event_record,
    event_replay,
    events_match,
    events_match_pending,
    keyword_trigger,
)
from campaigns.services.events.triggers import contact_rule_clean, keyword_normalize, trigger_errors

__all__ = [
    "HELPER_KEY",
    "KEYWORD_EVENT",
    "KICK_KEY",
    "MATCHER_LINGER",
    "MATCH_GATHER",
    "MATCH_BATCH",
    "MAX_BATCH",
    "PROPERTY_OPS",
    "ClaimedEvent",
    "EventError",
    "EventIn",
    "Outcome",
    "condition_holds",
    "conditions_clean",
    "conditions_hold",
    "contact_create_for_event",
    "contact_rule_clean",
    "event_clean",
    "event_contact",
    "event_record",
    "event_replay",
    "events_kick",
    "events_kick_clear",
    "events_linger",
    "events_match",
    "events_match_pending",
    "events_store",
    "helper_done",
    "helper_wake",
    "keyword_normalize",
    "keyword_trigger",
    "trigger_errors",
    "trigger_run",
]
