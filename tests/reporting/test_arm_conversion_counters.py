"""Converted recipients and revenue per experiment arm are kept by triggers on the conversion rows and
always equal a scan of them: through inserts, several conversions of one recipient, updates, deletions,
a recount, and two transactions converting the same recipient at once."""

import threading
import time
from decimal import Decimal

import pytest
from django.db import connection, transaction

from campaigns.models import Conversion, Recipient
from campaigns.services.arms import CONTROL_ARM
from reporting import counters
from reporting.arm_conversions import arm_conversions_read, arm_conversions_scanned
from reporting.models import ArmConversionCounter
from tests.factories import ConversionFactory, RecipientFactory
from tests.reporting.test_experiment_arms import experiment  # noqa: F401  (the fixture)


def _convert(run, recipient, value) -> Conversion:
    return ConversionFactory(
        run=run, campaign=run.campaign, recipient=recipient, message_id=recipient.message_id, value=value
    )


@pytest.mark.django_db
def test_a_recipient_counts_once_and_its_revenue_is_squared_whole(experiment):  # noqa: F811
    campaign, run, a, b, recipients = experiment
    first, second = recipients[a.pk][:2]
    _convert(run, first, Decimal("10"))
    _convert(run, first, Decimal("5.5"))  # the same recipient again: revenue 15.5, squared 240.25
    _convert(run, second, None)  # converted without a value
    _convert(run, recipients[b.pk][0], Decimal("3"))
    kept = arm_conversions_read([run.pk])
    assert kept[(a.pk, False)] == (2, Decimal("15.5"), Decimal("240.25"))
    assert kept[(b.pk, False)] == (1, Decimal("3"), Decimal("9"))
    assert kept == arm_conversions_scanned([run.pk])


@pytest.mark.django_db
def test_updates_and_deletions_move_the_counters_back(experiment):  # noqa: F811
    campaign, run, a, b, recipients = experiment
    recipient = recipients[a.pk][0]
    one, two = _convert(run, recipient, Decimal("10")), _convert(run, recipient, Decimal("20"))
    Conversion.objects.filter(pk=one.pk).update(value=Decimal("1"))
    assert arm_conversions_read([run.pk]) == {(a.pk, False): (1, Decimal("21"), Decimal("441"))}
    two.delete()
    assert arm_conversions_read([run.pk]) == {(a.pk, False): (1, Decimal("1"), Decimal("1"))}
    Conversion.objects.filter(pk=one.pk).delete()
    assert arm_conversions_read([run.pk]) == {} == arm_conversions_scanned([run.pk])


@pytest.mark.django_db
def test_the_control_group_converts_without_a_message_and_a_recount_agrees(experiment):  # noqa: F811
    campaign, run, a, b, recipients = experiment
    control = Recipient.objects.filter(run=run, arm=CONTROL_ARM).first()
    ConversionFactory(run=run, campaign=campaign, recipient=control, message=None, value=Decimal("7"))
    _convert(run, recipients[b.pk][1], Decimal("2"))
    kept = arm_conversions_read([run.pk])
    assert kept[(CONTROL_ARM, False)] == (1, Decimal("7"), Decimal("49"))
    ArmConversionCounter.objects.all().delete()  # lost, as after a restore
    counters.counters_recount([run.pk])
    assert arm_conversions_read([run.pk]) == kept == arm_conversions_scanned([run.pk])


@pytest.mark.django_db(transaction=True)
def test_two_transactions_converting_one_recipient_at_once_count_it_once():
    recipient = RecipientFactory(arm=41)
    run = recipient.run
    earlier = RecipientFactory(run=run, arm=41)
    ConversionFactory(run=run, campaign=run.campaign, recipient=earlier, value=Decimal("1"))  # the arm's row exists
    inserted = threading.Event()
    failures: list[BaseException] = []

    def convert(value: str, *, hold: bool) -> None:
        try:
            with transaction.atomic():
                ConversionFactory(run=run, campaign=run.campaign, recipient=recipient, value=Decimal(value))
                if hold:  # the other transaction inserts while this one is still open
                    inserted.set()
                    time.sleep(0.5)
        except BaseException as exc:  # reported to the test below
            failures.append(exc)
        finally:
            inserted.set()
            connection.close()

    holder = threading.Thread(target=convert, args=("10",), kwargs={"hold": True})
    holder.start()
    inserted.wait(5)
    other = threading.Thread(target=convert, args=("4",), kwargs={"hold": False})
    other.start()
    holder.join(10)
    other.join(10)
    assert not failures
    assert Conversion.objects.filter(recipient=recipient).count() == 2
    assert arm_conversions_read([run.pk]) == {(41, False): (2, Decimal("15"), Decimal("197"))}
    assert arm_conversions_read([run.pk]) == arm_conversions_scanned([run.pk])
