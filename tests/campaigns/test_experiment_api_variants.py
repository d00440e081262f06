"""A script sets a campaign's variants through the API: created and replaced with the campaign, checked
as the admin checks them (errors name ``variants[i].field``), audited, and fixed once launched."""

import pytest

from audience.models import Contact
from campaigns import services
from campaigns.models import Campaign, CampaignAction
from tests.factories import CampaignRunFactory, ContactFactory, MessageTemplateFactory, SenderFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def templates():
    return [MessageTemplateFactory(body=f"{label} {{{{ name }}}}") for label in "ABCDEF"]


def payload(templates, **fields):
    return {"name": "Spring", "template": templates[0].pk, "sender": SenderFactory().pk, **fields}


def arms(templates, *weights):
    return [{"label": "ABCDEF"[i], "template": templates[i].pk, "weight": w} for i, w in enumerate(weights)]


def test_staff_create_a_campaign_with_its_variants_and_read_them_back(staff_api, analyst_api, templates):
    body = {**payload(templates, control_share=10), "variants": arms(templates, 1, 3)}
    created = staff_api.post("/api/v1/campaigns/", body, format="json")
    assert created.status_code == 201, created.json()
    campaign = Campaign.objects.get(pk=created.json()["id"])
    stored = list(campaign.variants.order_by("id").values("id", "label", "template", "weight"))
    assert [(v["label"], v["template"], v["weight"]) for v in stored] == [
        ("A", templates[0].pk, 1),
        ("B", templates[1].pk, 3),
    ]
    assert created.json()["variants"] == stored
    assert analyst_api.get(f"/api/v1/campaigns/{campaign.pk}").json()["variants"] == stored
    audit = CampaignAction.objects.get(campaign=campaign, action="create")
    assert [v["label"] for v in audit.detail["variants"]] == ["A", "B"]


def test_a_patch_replaces_the_set_keeping_the_ids_of_the_labels_it_keeps(staff_api, templates):
    created = staff_api.post(
        "/api/v1/campaigns/", {**payload(templates), "variants": arms(templates, 1, 1)}, format="json"
    )
    campaign_id, (a, b) = created.json()["id"], created.json()["variants"]
    new = [
        {"label": "a", "template": templates[3].pk, "weight": 5},
        {"label": "C", "template": templates[2].pk},
        {"label": "D", "template": templates[3].pk, "weight": 2},
    ]
    patched = staff_api.patch(
        f"/api/v1/campaigns/{campaign_id}",
        {"variants": new, "winner_test_share": 20, "winner_wait": "02:00:00", "winner_metric": "clicks"},
        format="json",
    )
    assert patched.status_code == 200, patched.json()
    variants = patched.json()["variants"]
    assert [(v["label"], v["template"], v["weight"]) for v in variants] == [
        ("a", templates[3].pk, 5),
        ("C", templates[2].pk, 1),
        ("D", templates[3].pk, 2),
    ]
    assert variants[0]["id"] == a["id"] and b["id"] not in {v["id"] for v in variants}
    assert patched.json()["winner_test_share"] == 20
    edit = CampaignAction.objects.filter(campaign_id=campaign_id, action="edit").first()
    assert "variants" in edit.detail["fields"] and [v["label"] for v in edit.detail["variants"]] == ["a", "C", "D"]
    emptied = staff_api.patch(f"/api/v1/campaigns/{campaign_id}", {"variants": []}, format="json")
    assert emptied.status_code == 200 and emptied.json()["variants"] == []  # as the admin: checked at launch
    with pytest.raises(services.CampaignError, match="a test needs 2-5 variants"):
        services.campaign_launch(Campaign.objects.get(pk=campaign_id))


@pytest.mark.parametrize(
    ("variants", "field", "words"),
    [
        (lambda t: arms(t, 1), "variants", "2 to 5 variants, not 1"),
        (lambda t: arms(t, 1, 1, 1, 1, 1, 1), "variants", ""),
        (lambda t: arms(t, 1, 0), "variants[1].weight", ""),
        (lambda t: arms(t, 1, 1, -3), "variants[2].weight", ""),
        (lambda t: arms(t, 1, 101), "variants[1].weight", ""),
        (lambda t: [*arms(t, 1), {"label": "a ", "template": t[1].pk}], "variants[1].label", "used twice"),
        (lambda t: [*arms(t, 1), {"label": "B", "template": 999_999}], "variants[1].template", ""),
        (lambda t: [*arms(t, 1), {"label": "B"}], "variants[1].template", ""),
        (lambda t: [*arms(t, 1), "B"], "variants[1]", ""),
        (lambda t: {"label": "A"}, "variants", ""),
    ],
)
def test_bad_variants_are_a_400_naming_the_variant_and_field(staff_api, templates, variants, field, words):
    response = staff_api.post(
        "/api/v1/campaigns/", {**payload(templates), "variants": variants(templates)}, format="json"
    )
    assert response.status_code == 400 and field in response.json(), response.json()
    assert words in " ".join(response.json()[field])
    assert not Campaign.objects.exists()


def test_a_variant_template_of_another_channel_is_refused_naming_it(staff_api, templates):
    whatsapp = MessageTemplateFactory(channel="whatsapp")
    variants = [*arms(templates, 1), {"label": "B", "template": whatsapp.pk, "weight": 1}]
    response = staff_api.post("/api/v1/campaigns/", {**payload(templates), "variants": variants}, format="json")
    assert response.status_code == 400
    assert response.json()["variants[1].template"] == [
        "variant 'B': a whatsapp template cannot go through a sms sender"
    ]


def test_variants_are_fixed_once_launched_but_sending_them_back_unchanged_is_fine(staff_api, templates):
    Contact.objects.bulk_create(ContactFactory.build_batch(5))
    created = staff_api.post(
        "/api/v1/campaigns/", {**payload(templates), "variants": arms(templates, 1, 2)}, format="json"
    )
    campaign = Campaign.objects.get(pk=created.json()["id"])
    services.campaign_launch(campaign)
    read = staff_api.get(f"/api/v1/campaigns/{campaign.pk}").json()["variants"]
    same = staff_api.patch(f"/api/v1/campaigns/{campaign.pk}", {"variants": read[::-1], "mps": 5}, format="json")
    assert same.status_code == 200, same.json()
    changed = staff_api.patch(f"/api/v1/campaigns/{campaign.pk}", {"variants": arms(templates, 1, 3)}, format="json")
    assert changed.status_code == 400
    assert "fixed once the campaign has launched" in changed.json()["variants"][0]
    assert list(campaign.variants.values_list("weight", flat=True)) == [1, 2]


def test_a_scheduled_campaign_that_has_run_keeps_its_variants(staff_api, templates):
    created = staff_api.post(
        "/api/v1/campaigns/", {**payload(templates), "variants": arms(templates, 1, 2)}, format="json"
    )
    campaign = Campaign.objects.get(pk=created.json()["id"])
    Campaign.objects.filter(pk=campaign.pk).update(status="scheduled")  # a recurring campaign between runs
    CampaignRunFactory(campaign=campaign)
    changed = staff_api.patch(f"/api/v1/campaigns/{campaign.pk}", {"variants": arms(templates, 2, 2)}, format="json")
    assert changed.status_code == 400 and "variants" in changed.json()


def test_the_schema_describes_writable_variants(staff_api):
    schema = staff_api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    components = schema["components"]["schemas"]
    request = components.get("CampaignRequest") or components["Campaign"]
    variants = request["properties"]["variants"]
    assert not variants.get("readOnly") and "variants[i].field" in variants["description"]
    item = components[variants["items"]["$ref"].rsplit("/", 1)[1]]
    assert {"label", "template", "weight"} <= set(item["properties"])
    assert item["properties"]["weight"]["minimum"] == 1 and item["properties"]["weight"]["maximum"] == 100


def test_the_shares_of_a_launched_experiment_are_fixed(staff_api, templates):
    """Every recipient's arm was drawn with the control and test shares: changing them would re-deal the arms."""
    Contact.objects.bulk_create(ContactFactory.build_batch(5))
    body = {**payload(templates, control_share=10), "variants": arms(templates, 1, 2)}
    campaign = Campaign.objects.get(pk=staff_api.post("/api/v1/campaigns/", body, format="json").json()["id"])
    draft = staff_api.patch(f"/api/v1/campaigns/{campaign.pk}", {"control_share": 20}, format="json")
    assert draft.status_code == 200  # before launch: free
    services.campaign_launch(campaign)
    for name, value in (("control_share", 30), ("winner_test_share", 50)):
        changed = staff_api.patch(f"/api/v1/campaigns/{campaign.pk}", {name: value}, format="json")
        assert changed.status_code == 400 and "fixed once the experiment has launched" in changed.json()[name][0]
    same = staff_api.patch(f"/api/v1/campaigns/{campaign.pk}", {"control_share": 20, "mps": 7}, format="json")
    assert same.status_code == 200, same.json()
    campaign.refresh_from_db()
    assert (campaign.control_share, campaign.winner_test_share, campaign.mps) == (20, None, 7)
