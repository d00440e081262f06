"""Message counters stay exactly equal to a recount, whatever order and however often callbacks come."""

import math
import random

import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from messaging.models import Message, MessageStatus
from messaging.services.status import status_callback_record
from reporting import counter_sql, counters
from reporting.counters import (
    counters_read,
    counters_recount,
    counters_recounted,
    counters_sweep,
    counters_sync,
    on_message_status_changed,
)
from reporting.models import CountedMessage
from tests.reporting.support import T0, add_recipient, make_campaign, make_message, make_run

pytestmark = pytest.mark.django_db

# The callbacks each message gets (Twilio's names), before shuffling and duplicating.
PLANS = [
    ["sent", "delivered", "read"],
    ["sent", "delivered"],
    ["sent", "undelivered:30003"],
    ["failed:30007"],
    ["sent"],
    ["delivered", "sent"],
    ["sent", "delivered", "failed:30008"],
]


def _callbacks(messages, plans, rng):
    events = []
    for message, plan in zip(messages, plans, strict=True):
        for step in plan:
            status, _, code = step.partition(":")
            events.append((message.provider_sid, status, code))
    events += rng.sample(events, len(events) // 2)  # duplicates, as Twilio retries
    rng.shuffle(events)
    return events


def _record(sid, status, code):
    payload = {"MessageSid": sid, "MessageStatus": status, **({"ErrorCode": code} if code else {})}
    status_callback_record(provider_sid=sid, status=status, error_code=code, payload=payload)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_counters_equal_a_recount_after_unordered_and_duplicated_callbacks(seed, django_capture_on_commit_callbacks):
    run = make_run(make_campaign())
    messages = [add_recipient(run).message for _ in PLANS]
    counters_sweep(since=T0)  # counts them as queued
    assert counters_read([run.pk]) == counters_recounted([run.pk])
    with django_capture_on_commit_callbacks(execute=True):
        for sid, status, code in _callbacks(messages, PLANS, random.Random(seed)):
            _record(sid, status, code)

    assert counters_read([run.pk]) == counters_recounted([run.pk])
    statuses = {key[1]: value[0] for key, value in counters_read([run.pk]).items() if key[2] == ""}
    assert statuses == {"read": 1, "delivered": 2, "sent": 1}
    failures = {key[2]: key[1] for key in counters_read([run.pk]) if key[2]}
    assert failures == {"30003": "undelivered", "30007": "failed", "30008": "failed"}


def test_the_receiver_alone_keeps_counters_right_when_every_change_is_signalled(
    django_capture_on_commit_callbacks,
):
    run = make_run(make_campaign())
    message = add_recipient(run).message
    counters_recount([run.pk])
    with django_capture_on_commit_callbacks(execute=True):
        _record(message.provider_sid, "delivered", "")
        _record(message.provider_sid, "sent", "")
        _record(message.provider_sid, "delivered", "")
    assert {k[1]: v[0] for k, v in counters_read([run.pk]).items()} == {"delivered": 1}
    assert CountedMessage.objects.get(message_id=message.pk).status == "delivered"


def test_the_sweep_counts_changes_made_without_the_signal():
    run = make_run(make_campaign())
    recipients = [add_recipient(run, price="-0.0075") for _ in range(3)]
    counters_sweep(since=T0)
    Message.objects.filter(pk=recipients[0].message_id).update(status=MessageStatus.FAILED, error_code="21610")
    Message.objects.filter(pk=recipients[1].message_id).update(status=MessageStatus.SKIPPED)
    assert counters_read([run.pk]) != counters_recounted([run.pk])

    assert counters_sweep(since=T0) == 2
    assert counters_read([run.pk]) == counters_recounted([run.pk])
    assert counters_sweep(since=T0) == 0  # nothing left behind, nothing counted twice
    price_total = sum(total for _count, total, _priced in counters_read([run.pk]).values())
    assert str(price_total) == "-0.02250"


def test_recount_rebuilds_counters_that_went_wrong():
    run = make_run(make_campaign())
    for _ in range(4):
        add_recipient(run)
    counters_sweep(since=T0)
    CountedMessage.objects.filter(run_id=run.pk).update(status="read")  # corrupt on purpose
    counters_recount([run.pk])
    assert counters_read([run.pk]) == counters_recounted([run.pk])
    assert {k[1]: v[0] for k, v in counters_read([run.pk]).items()} == {"queued": 4}


def test_messages_outside_campaigns_are_not_counted(django_capture_on_commit_callbacks):
    from tests.reporting.support import make_message

    message = make_message()
    with django_capture_on_commit_callbacks(execute=True):
        _record(message.provider_sid, "delivered", "")
    assert not CountedMessage.objects.exists()


def test_the_recount_command_rebuilds_every_run():
    from io import StringIO

    from django.core.management import call_command

    runs = [make_run(make_campaign(name)) for name in ("A", "B")]
    for run in runs:
        add_recipient(run, message_status=MessageStatus.DELIVERED)
    out = StringIO()
    call_command("reporting_recount", stdout=out)
    assert "every run" in out.getvalue()
    ids = [run.pk for run in runs]
    assert counters_read(ids) == counters_recounted(ids)
    assert sum(count for count, _total, _priced in counters_read(ids).values()) == 2


def test_a_transactional_message_costs_the_webhook_no_counting():
    # A message nothing caused (no source) is not a campaign's: the receiver returns before any SQL.
    from reporting.models import MessageStatusCounter

    message = make_message(status="sent", sid="SM" + "7" * 32)
    with CaptureQueriesContext(connection) as queries:
        on_message_status_changed(sender=None, message_id=message.pk, source_type_id=None)
    assert len(queries) == 0
    status_callback_record(provider_sid=message.provider_sid, status="delivered", payload={})
    assert not MessageStatusCounter.objects.exists()


def test_a_callback_sync_runs_the_reporting_function(django_capture_on_commit_callbacks):
    # Planning the sync statement cost several times more than running it: PL/pgSQL keeps its plan
    # for the server connection's life, behind a pooler too. A function that refuses shows it runs.
    run = make_run(make_campaign())
    message = add_recipient(run).message
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE OR REPLACE FUNCTION {counter_sql.SYNC_ONE_FUNCTION}(p_id bigint, p_contact bigint) "
            "RETURNS bigint LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the function ran'; END $$"
        )
    with pytest.raises(DatabaseError, match="the function ran"), transaction.atomic():
        counters_sync([message.pk])
    counters.sync_function_create()
    assert counters_sync([message.pk]) == 1
    assert counters_read([run.pk]) == counters_recounted([run.pk])


def test_without_the_function_the_statement_counts_the_same(monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(counters, "_function_seen", {})
    with connection.cursor() as cursor:
        cursor.execute(f"DROP FUNCTION {counter_sql.SYNC_ONE_FUNCTION}(bigint, bigint)")
    run = make_run(make_campaign())
    messages = [add_recipient(run).message for _ in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        for message, status in zip(messages, ("delivered", "sent", "failed"), strict=True):
            _record(message.provider_sid, status, "30007" if status == "failed" else "")
    assert counters._function_seen[connection.alias] != math.inf  # looked for, not found
    assert counters_read([run.pk]) == counters_recounted([run.pk])
    assert {k[1]: v[0] for k, v in counters_read([run.pk]).items()} == {"delivered": 1, "sent": 1, "failed": 1}


def test_migrate_creates_the_function_this_code_names_and_drops_older_ones():
    stale = counter_sql.SYNC_ONE_FUNCTION_PREFIX + "0" * 12
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE FUNCTION {stale}(bigint, bigint) RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint'")
        cursor.execute(f"DROP FUNCTION {counter_sql.SYNC_ONE_FUNCTION}(bigint, bigint)")
    counters.sync_function_create()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT proname FROM pg_proc WHERE starts_with(proname, %s)", [counter_sql.SYNC_ONE_FUNCTION_PREFIX]
        )
        assert [row[0] for row in cursor.fetchall()] == [counter_sql.SYNC_ONE_FUNCTION]


def test_a_function_dropped_under_a_running_process_costs_no_count(monkeypatch):
    # A deploy's migrate drops the function older code names while that code still runs.
    monkeypatch.setattr(counters, "_function_seen", {connection.alias: math.inf})
    run = make_run(make_campaign())
    message = add_recipient(run).message
    with connection.cursor() as cursor:
        cursor.execute(f"DROP FUNCTION {counter_sql.SYNC_ONE_FUNCTION}(bigint, bigint)")
    assert counters_sync([message.pk]) == 1
    assert counters._function_seen[connection.alias] != math.inf  # looked for again later
    assert counters_read([run.pk]) == counters_recounted([run.pk])
