"""The campaigns API carries the experiment's settings, its variants and each run's arm sizes."""

import datetime as dt

import pytest

from audience.models import Contact
from campaigns import services
from tests.factories import CampaignFactory, ContactFactory, MessageTemplateFactory, SenderFactory, VariantFactory

pytestmark = pytest.mark.django_db


def test_staff_set_the_experiment_and_analysts_read_it(staff_api, analyst_api):
    payload = {"name": "Test", "template": MessageTemplateFactory().pk, "sender": SenderFactory().pk}
    created = staff_api.post(
        "/api/v1/campaigns/",
        {
            **payload,
            "control_share": 10,
            "winner_test_share": 20,
            "winner_wait": "02:00:00",
            "winner_metric": "replies",
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["control_share"], body["winner_test_share"], body["winner_wait"]) == (10, 20, "02:00:00")
    assert (body["variants"], body["winner_variant"]) == ([], None)
    campaign_id = body["id"]
    a = VariantFactory(campaign_id=campaign_id, label="A")
    read = analyst_api.get(f"/api/v1/campaigns/{campaign_id}").json()
    assert read["variants"] == [{"id": a.pk, "label": "A", "template": a.template_id, "weight": 1}]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"control_share": 60}, "control_share"),
        ({"winner_test_share": 80, "winner_wait": "01:00:00", "winner_metric": "replies"}, "winner_test_share"),
        ({"winner_test_share": 20, "winner_metric": "replies"}, "winner_wait"),
        ({"winner_test_share": 20, "winner_wait": "01:00:00", "winner_metric": "likes"}, "winner_metric"),
    ],
)
def test_bad_experiment_settings_are_a_400_naming_the_field(staff_api, fields, field):
    payload = {"name": "Test", "template": MessageTemplateFactory().pk, "sender": SenderFactory().pk}
    response = staff_api.post("/api/v1/campaigns/", {**payload, **fields}, format="json")
    assert response.status_code == 400 and field in response.json(), response.json()


def test_a_run_shows_its_arm_sizes(analyst_api):
    Contact.objects.bulk_create(ContactFactory.build_batch(30))
    campaign = CampaignFactory(winner_test_share=50, winner_wait=dt.timedelta(hours=1), winner_metric="replies")
    VariantFactory(campaign=campaign)
    VariantFactory(campaign=campaign)
    run = services.campaign_launch(campaign)
    runs = analyst_api.get(f"/api/v1/campaigns/{campaign.pk}/runs").json()
    sizes = runs["results"][0]["arm_sizes"] if isinstance(runs, dict) else runs[0]["arm_sizes"]
    run.refresh_from_db()
    assert sizes == run.arm_sizes and sum(sizes.values()) == 30 and "waiting" in sizes
