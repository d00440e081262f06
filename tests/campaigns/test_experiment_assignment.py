"""Experiment arms: deterministic per contact, shared by weight, a control group measured but never sent."""

import datetime as dt
import hashlib
from collections import Counter

import pytest

from audience.models import Contact
from campaigns import services
from campaigns.models import CampaignRun, Recipient, SkipReason
from campaigns.services import arms
from tests.factories import CampaignFactory, ContactFactory, MessageTemplateFactory, VariantFactory

pytestmark = pytest.mark.django_db
NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def arm_of(campaign_id, contact_id, plan):
    """The documented mapping, computed independently of the SQL that assigns."""
    h = int(hashlib.md5(f"{campaign_id}:{contact_id}".encode()).hexdigest()[:8], 16)
    return next(arm for bound, arm in plan.bounds if h < bound)


def contacts(n):
    built = ContactFactory.build_batch(n)
    return Contact.objects.bulk_create(built)


def experiment(weights, control_share=0, **fields):
    campaign = CampaignFactory(control_share=control_share, **fields)
    variants = [
        VariantFactory(
            campaign=campaign, label=f"V{i}", weight=w, template=MessageTemplateFactory(body=f"V{i} {{{{ name }}}}")
        )
        for i, w in enumerate(weights)
    ]
    return campaign, variants


def test_weights_share_10k_contacts_within_tolerance_and_control_is_skipped_as_control():
    contacts(10_000)
    campaign, (a, b, c) = experiment([1, 2, 1], control_share=20)
    run = services.campaign_launch(campaign, now=NOW)
    by_arm = Counter(Recipient.objects.filter(run=run).values_list("arm", flat=True))
    assert sum(by_arm.values()) == 10_000
    expected = {arms.CONTROL_ARM: 2000, a.pk: 2000, b.pk: 4000, c.pk: 2000}
    for arm, share in expected.items():
        assert abs(by_arm[arm] - share) < 200, (arm, by_arm[arm], share)  # ~4.5 standard deviations
    control = Recipient.objects.filter(run=run, arm=arms.CONTROL_ARM)
    assert set(control.values_list("state", "reason").distinct()) == {("skipped", SkipReason.CONTROL)}
    run.refresh_from_db()
    # The control group is counted as control (a skip reason), not as a failure, and nobody in it is sent.
    assert (run.failed, run.skipped_by_reason) == (0, {"control": by_arm[arms.CONTROL_ARM]})
    assert run.pending == 10_000 - by_arm[arms.CONTROL_ARM]
    assert run.arm_sizes == {str(arm): count for arm, count in by_arm.items()}


def test_assignment_is_deterministic_and_the_same_in_sql_and_python():
    people = contacts(500)
    campaign, _ = experiment([3, 1], control_share=10)
    first = services.campaign_launch(campaign, now=NOW)
    assigned = dict(Recipient.objects.filter(run=first).values_list("contact_id", "arm"))
    plan = arms.arm_plan(campaign)
    assert assigned == {p.pk: arm_of(campaign.pk, p.pk, plan) for p in people}
    # The triggered path asks the same expression: same arms for the same contacts.
    assert arms.arms_for_contacts(campaign, [p.pk for p in people]) == assigned
    # Another run of the campaign assigns each contact the same arm again.
    second = CampaignRun.objects.create(campaign=campaign, scheduled_for=NOW + dt.timedelta(days=1), mps=1)
    from campaigns.services import snapshot

    snapshot.snapshot_insert(second.pk, snapshot.snapshot_query(campaign, NOW))
    assert dict(Recipient.objects.filter(run=second).values_list("contact_id", "arm")) == assigned


def test_another_campaign_draws_its_own_arms():
    people = contacts(400)
    one, _ = experiment([1, 1])
    two, _ = experiment([1, 1])
    plan_one, plan_two = arms.arm_plan(one), arms.arm_plan(two)
    first = [arm_of(one.pk, p.pk, plan_one) == plan_one.bounds[0][1] for p in people]
    second = [arm_of(two.pk, p.pk, plan_two) == plan_two.bounds[0][1] for p in people]
    assert first != second  # not the same half of the audience in every experiment


def test_each_arm_is_sent_its_variants_template():
    contacts(40)
    campaign, (a, b) = experiment([1, 1])
    run = services.campaign_launch(campaign, now=NOW)
    from campaigns.services import dispatch

    dispatch.recipients_claim(run, 100)
    rows = Recipient.objects.filter(run=run).values_list("arm", "message__template_id")
    assert {arm: template for arm, template in rows} == {a.pk: a.template_id, b.pk: b.template_id}


@pytest.mark.parametrize(
    ("weights", "control", "error"),
    [
        ([1], 0, "2 to 5 variants, not 1"),
        ([1] * 6, 0, "2 to 5 variants, not 6"),
        ([], 20, "a control group needs 2-5 variants"),
    ],
)
def test_a_bad_experiment_is_refused_at_launch_naming_the_problem(weights, control, error):
    contacts(3)
    campaign, _ = experiment(weights, control_share=control)
    with pytest.raises(services.CampaignError) as caught:
        services.campaign_launch(campaign, now=NOW)
    assert error in str(caught.value)


def test_a_weight_out_of_range_is_named():
    template = MessageTemplateFactory()
    assert arms.variants_errors([("A", template, 1), ("B", template, 0)]) == [
        "variant 'B': the weight must be a whole number from 1 to 100, not 0"
    ]


def test_labels_used_twice_are_refused():
    template = MessageTemplateFactory()
    assert arms.variants_errors([("A", template, 1), ("a ", template, 1)]) == [
        "the label 'a' is used twice: each variant needs its own"
    ]


def test_a_duplicate_keeps_the_experiment():
    campaign, variants = experiment([1, 3], control_share=15)
    copy = services.campaign_duplicate(campaign)
    assert copy.control_share == 15
    assert list(copy.variants.values_list("label", "template_id", "weight")) == [
        (v.label, v.template_id, v.weight) for v in variants
    ]
    assert not set(copy.variants.values_list("pk", flat=True)) & {v.pk for v in variants}
