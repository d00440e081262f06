"""The admin's experiment: the variants inline (2-5, weights checked) and the winner page (staff only)."""

import datetime as dt
import re

import pytest

from audience.models import Contact
from campaigns import services
from campaigns.models import WINNER_ACTION, Campaign, CampaignAction, Recipient
from tests.factories import (
    CampaignFactory,
    ContactFactory,
    MessageTemplateFactory,
    SenderFactory,
    UserFactory,
    VariantFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(username="boss", is_superuser=True))
    return client


def campaign_form(template, sender, variants, **fields):
    data = {
        "name": "Experiment",
        "kind": "one_off",
        "template": template.pk,
        "sender": sender.pk,
        "schedule_type": "now",
        "cron_timezone": "UTC",
        "control_share": 10,
        "winner_pick": "auto",
        "runs-TOTAL_FORMS": 0,
        "runs-INITIAL_FORMS": 0,
        "actions-TOTAL_FORMS": 0,
        "actions-INITIAL_FORMS": 0,
        "variants-TOTAL_FORMS": len(variants),
        "variants-INITIAL_FORMS": 0,
        **fields,
    }
    for i, (label, variant_template, weight) in enumerate(variants):
        data |= {f"variants-{i}-label": label, f"variants-{i}-template": variant_template.pk}
        data[f"variants-{i}-weight"] = weight
    return data


def test_staff_add_a_campaign_with_variants_and_a_control_group(staff_client):
    template, sender = MessageTemplateFactory(), SenderFactory()
    form = campaign_form(template, sender, [("A", template, 1), ("B", MessageTemplateFactory(), 3)])
    response = staff_client.post("/admin/campaigns/campaign/add/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    campaign = Campaign.objects.get(name="Experiment")
    assert campaign.control_share == 10
    assert list(campaign.variants.values_list("label", "weight")) == [("A", 1), ("B", 3)]


@pytest.mark.parametrize(
    ("variants", "error"),
    [
        ([("A", 1)], "an experiment has 2 to 5 variants, not 1"),
        ([("A", 1), ("a", 2)], "the label &#x27;a&#x27; is used twice"),
    ],
)
def test_a_bad_set_of_variants_is_refused_with_a_clear_error(staff_client, variants, error):
    template, sender = MessageTemplateFactory(), SenderFactory()
    form = campaign_form(template, sender, [(label, template, weight) for label, weight in variants])
    response = staff_client.post("/admin/campaigns/campaign/add/", form)
    assert response.status_code == 200
    assert error in response.content.decode()
    assert not Campaign.objects.filter(name="Experiment").exists()


def test_a_weight_of_zero_is_refused_naming_the_field(staff_client):
    template, sender = MessageTemplateFactory(), SenderFactory()
    form = campaign_form(template, sender, [("A", template, 1), ("B", template, 0)])
    page = staff_client.post("/admin/campaigns/campaign/add/", form).content.decode()
    errors = re.findall(r'class="errorlist[^"]*"[^>]*>(.*?)</ul>', page, re.S)
    assert any("greater than or equal to 1" in error for error in errors), errors
    assert not Campaign.objects.filter(name="Experiment").exists()


@pytest.fixture
def testing():
    Contact.objects.bulk_create(ContactFactory.build_batch(60))
    campaign = CampaignFactory(winner_test_share=50, winner_wait=dt.timedelta(hours=1), winner_metric="replies")
    a = VariantFactory(campaign=campaign, label="A")
    b = VariantFactory(campaign=campaign, label="B")
    run = services.campaign_launch(campaign)
    return campaign, run, a, b


def test_staff_pick_the_winner_after_a_confirmation(staff_client, testing):
    campaign, run, a, b = testing
    change = staff_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert "pick the winner" in change
    url = f"/admin/campaigns/campaign/{campaign.pk}/winner/"
    page = staff_client.get(url).content.decode()
    assert 'name="confirm"' in page and ">A<" in page.replace('<th scope="row">', ">")
    unconfirmed = staff_client.post(url, {"variant": b.pk})
    assert unconfirmed.status_code == 302 and Campaign.objects.get(pk=campaign.pk).winner_variant_id is None
    staff_client.post(url, {"variant": b.pk, "confirm": "1"})
    staff_client.post(url, {"variant": a.pk, "confirm": "1"})  # a second pick changes nothing
    assert Campaign.objects.get(pk=campaign.pk).winner_variant_id == b.pk
    action = CampaignAction.objects.get(campaign=campaign, action=WINNER_ACTION)
    assert (action.actor, action.detail["how"]) == ("boss", "manual")
    assert set(Recipient.objects.filter(run=run, rollout=True).values_list("arm", flat=True)) == {b.pk}


def test_an_analyst_sees_the_winner_page_but_cannot_pick(client, analyst_user, testing):
    campaign, _run, _a, b = testing
    client.force_login(analyst_user)
    url = f"/admin/campaigns/campaign/{campaign.pk}/winner/"
    page = client.get(url)
    assert page.status_code == 200 and 'name="confirm"' not in page.content.decode()
    assert client.post(url, {"variant": b.pk, "confirm": "1"}).status_code == 403
    assert Campaign.objects.get(pk=campaign.pk).winner_variant_id is None


def test_variants_are_fixed_once_the_campaign_has_launched(staff_client, testing):
    campaign, *_ = testing
    page = staff_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert 'name="variants-0-weight"' not in page


def test_keep_waiting_without_a_longest_wait_is_refused_naming_the_field(staff_client):
    template, sender = MessageTemplateFactory(), SenderFactory()
    test = {"winner_test_share": 20, "winner_wait": "02:00:00", "winner_metric": "replies", "winner_undecided": "wait"}
    form = campaign_form(template, sender, [("A", template, 1), ("B", template, 1)], **test)
    page = staff_client.post("/admin/campaigns/campaign/add/", form).content.decode()
    assert "give a longest wait past the wait" in page
    assert not Campaign.objects.filter(name="Experiment").exists()
    form["winner_max_wait"] = "06:00:00"
    assert staff_client.post("/admin/campaigns/campaign/add/", form).status_code == 302
    assert Campaign.objects.get(name="Experiment").winner_max_wait == dt.timedelta(hours=6)


def test_the_campaign_page_says_whether_the_winner_was_significant(staff_client, testing):
    campaign, run, a, b = testing
    staff_client.post(f"/admin/campaigns/campaign/{campaign.pk}/winner/", {"variant": b.pk, "confirm": "1"})
    why = CampaignAction.objects.get(campaign=campaign, action=WINNER_ACTION).detail["why"]
    assert why == "B ties for the lead, not significantly, on reply rate: A 0.0 %, B 0.0 %."  # nothing sent yet
    change = staff_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert why.replace("'", "&#x27;") in change


def test_the_admin_refuses_a_new_control_share_once_the_experiment_launched(staff_client):
    template, sender = MessageTemplateFactory(), SenderFactory()
    Contact.objects.bulk_create(ContactFactory.build_batch(3))
    form = campaign_form(template, sender, [("A", template, 1), ("B", MessageTemplateFactory(), 3)])
    assert staff_client.post("/admin/campaigns/campaign/add/", form).status_code == 302
    campaign = Campaign.objects.get(name="Experiment")
    services.campaign_launch(campaign)
    change = campaign_form(template, sender, [], control_share=40)
    page = staff_client.post(f"/admin/campaigns/campaign/{campaign.pk}/change/", change)
    assert page.status_code == 200  # the form again, with the error; not a 500
    assert "fixed once the experiment has launched" in page.content.decode()
    campaign.refresh_from_db()
    assert campaign.control_share == 10
