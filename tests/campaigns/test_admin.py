import pytest
from django.utils import timezone

from audience import services as audience
from campaigns.models import Campaign, CampaignRun
from tests.factories import CampaignFactory, MessageTemplateFactory, SenderFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(username="boss", is_superuser=True))
    return client


@pytest.fixture
def campaign():
    audience.contact_create(phone="+254712000001", name="A")
    return CampaignFactory(name="Promo")


def test_staff_create_a_campaign_in_the_admin(staff_client):
    template, sender = MessageTemplateFactory(), SenderFactory()
    response = staff_client.post(
        "/admin/campaigns/campaign/add/",
        {
            "name": "From admin",
            "kind": "one_off",
            "template": template.pk,
            "sender": sender.pk,
            "schedule_type": "now",
            "cron_timezone": "UTC",
            "runs-TOTAL_FORMS": 0,
            "runs-INITIAL_FORMS": 0,
            "actions-TOTAL_FORMS": 0,
            "actions-INITIAL_FORMS": 0,
            "variants-TOTAL_FORMS": 0,
            "variants-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    created = Campaign.objects.get(name="From admin")
    assert created.actions.get().action == "create"


def test_admin_form_refuses_an_mps_above_the_sender(staff_client):
    sender = SenderFactory()  # long code outside +1: 10 messages per second
    response = staff_client.post(
        "/admin/campaigns/campaign/add/",
        {
            "name": "Too fast",
            "kind": "one_off",
            "template": MessageTemplateFactory().pk,
            "sender": sender.pk,
            "schedule_type": "now",
            "cron_timezone": "UTC",
            "mps": 50,
            "runs-TOTAL_FORMS": 0,
            "runs-INITIAL_FORMS": 0,
            "actions-TOTAL_FORMS": 0,
            "actions-INITIAL_FORMS": 0,
            "variants-TOTAL_FORMS": 0,
            "variants-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 200
    assert "above the sender" in response.content.decode()
    assert not Campaign.objects.exists()


def test_change_page_offers_the_actions_of_the_current_status(staff_client, campaign):
    page = staff_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert "Launch now" in page and "Dry run" in page and "Resume" not in page
    assert "1 opted-in contacts" in page


def test_launch_pause_and_dry_run_from_the_admin(staff_client, campaign):
    dry = staff_client.get(f"/admin/campaigns/campaign/{campaign.pk}/dry-run/")
    assert dry.status_code == 200 and "Hello A" in dry.content.decode()
    assert staff_client.get(f"/admin/campaigns/campaign/{campaign.pk}/act/pause/").status_code == 405
    # Launch now asks first, stating what it will do; nothing starts on the GET.
    confirm = staff_client.get(f"/admin/campaigns/campaign/{campaign.pk}/act/launch/").content.decode()
    assert "Launch Promo now?" in confirm and "Estimated duration" in confirm and "Yes, launch now" in confirm
    assert not CampaignRun.objects.exists()
    staff_client.post(f"/admin/campaigns/campaign/{campaign.pk}/act/launch/")
    assert CampaignRun.objects.filter(campaign=campaign).count() == 1
    page = staff_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert "<progress" in page and "Pause" in page
    staff_client.post(f"/admin/campaigns/campaign/{campaign.pk}/act/pause/")
    campaign.refresh_from_db()
    assert campaign.status == "paused"


def test_cancel_asks_first_stating_what_was_sent_and_what_will_be_skipped(staff_client, campaign):
    page = staff_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert f'href="/admin/campaigns/campaign/{campaign.pk}/act/cancel/">Cancel campaign' in page
    confirm = staff_client.get(f"/admin/campaigns/campaign/{campaign.pk}/act/cancel/").content.decode()
    assert "Cancel Promo?" in confirm and "none yet: nothing has been sent" in confirm
    campaign.refresh_from_db()
    assert campaign.status == "draft"
    staff_client.post(f"/admin/campaigns/campaign/{campaign.pk}/act/cancel/")
    campaign.refresh_from_db()
    assert campaign.status == "cancelled"


def test_launching_to_nobody_from_the_admin_says_why_and_starts_nothing(staff_client, campaign):
    campaign.template = MessageTemplateFactory(body="Your code: {{ attributes.offer_code }}")
    campaign.save()
    confirm = staff_client.get(f"/admin/campaigns/campaign/{campaign.pk}/act/launch/").content.decode()
    assert "Excluded: missing variable" in confirm
    response = staff_client.post(f"/admin/campaigns/campaign/{campaign.pk}/act/launch/", follow=True)
    assert "Could not launch: nobody would receive this campaign now" in response.content.decode()
    assert not CampaignRun.objects.exists()


def test_the_dry_run_speaks_words_not_codes(staff_client, campaign):
    campaign.template = MessageTemplateFactory(body="Your code: {{ attributes.offer_code }}")
    campaign.save()
    page = staff_client.get(f"/admin/campaigns/campaign/{campaign.pk}/dry-run/").content.decode()
    assert "Excluded: missing variable" in page and "missing_variable" not in page and "minute" in page


def test_analysts_cannot_act_on_campaigns(client, campaign):
    client.force_login(UserFactory(username="reader", role="Analysts"))
    assert client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").status_code == 200
    # The dry run runs the launch's snapshot query: Staff only, as in the API.
    assert client.get(f"/admin/campaigns/campaign/{campaign.pk}/dry-run/").status_code == 403
    client.post(f"/admin/campaigns/campaign/{campaign.pk}/act/launch/")
    assert not CampaignRun.objects.exists()


def test_a_staff_user_without_a_role_sees_no_dry_run(client, campaign):
    client.force_login(UserFactory(username="nobody", is_staff=True))
    assert client.get(f"/admin/campaigns/campaign/{campaign.pk}/dry-run/").status_code == 403


def test_a_cancelled_campaign_is_read_only_and_can_be_duplicated(staff_client, campaign):
    staff_client.post(f"/admin/campaigns/campaign/{campaign.pk}/act/cancel/")
    page = staff_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert "View campaign" in page and 'name="_save"' not in page and 'id="id_name"' not in page
    assert ">Duplicate</button>" in page
    response = staff_client.post(f"/admin/campaigns/campaign/{campaign.pk}/act/duplicate/")
    copy = Campaign.objects.get(name="Promo (copy)")
    assert response.status_code == 302 and response["Location"].endswith(f"/campaign/{copy.pk}/change/")
    assert (copy.status, copy.template_id, copy.sender_id) == ("draft", campaign.template_id, campaign.sender_id)
    staff_client.post(f"/admin/campaigns/campaign/{campaign.pk}/act/duplicate/")
    assert Campaign.objects.filter(name="Promo (copy 2)").exists()
    assert copy.actions.get().detail == {"duplicate_of": campaign.pk}


def test_saving_a_campaign_whose_template_most_of_the_audience_cannot_fill_warns(staff_client, campaign):
    template = MessageTemplateFactory(body="Your code: {{ attributes.offer_code }}")
    response = staff_client.post(
        "/admin/campaigns/campaign/add/",
        {
            "name": "Codes",
            "kind": "one_off",
            "template": template.pk,
            "sender": campaign.sender_id,
            "schedule_type": "now",
            "cron_timezone": "UTC",
            "runs-TOTAL_FORMS": 0,
            "runs-INITIAL_FORMS": 0,
            "actions-TOTAL_FORMS": 0,
            "actions-INITIAL_FORMS": 0,
            "variants-TOTAL_FORMS": 0,
            "variants-INITIAL_FORMS": 0,
        },
        follow=True,
    )
    text = response.content.decode()
    assert "1 of the 1 contacts in this campaign&#x27;s audience lack a value its template needs" in text
    assert Campaign.objects.filter(name="Codes").exists()  # a warning, not a refusal


def test_the_back_office_is_one_product_whose_home_says_what_is_sending(staff_client, campaign, client):
    home = staff_client.get("/admin/").content.decode()
    assert "Messaging platform" in home and "Django administration" not in home
    assert 'id="sending-now"' in home and "Nothing is sending" in home
    assert 'href="/reporting/">View site' in home
    CampaignRun.objects.create(
        campaign=campaign, scheduled_for=timezone.now(), status="running", mps=10, total=5, sent=2, held=1, failed=1
    )
    home = " ".join(staff_client.get("/admin/").content.decode().split())
    assert "Promo" in home and "<td>2 of 5</td> <td>0</td> <td>1</td> <td>1</td>" in home
    assert client.get("/").headers["Location"] == "/reporting/"


def test_saving_a_template_warns_for_each_campaign_whose_audience_lacks_its_new_variable(staff_client, campaign):
    template = campaign.template
    finished = CampaignFactory(name="Old", template=template, status="completed")
    response = staff_client.post(
        f"/admin/messaging/messagetemplate/{template.pk}/change/",
        {
            "name": template.name,
            "channel": "sms",
            "locale": template.locale,
            "body": "Code {{ attributes.code }}",
            "fallbacks": "{}",
        },
        follow=True,
    )
    text = response.content.decode()
    assert response.status_code == 200 and "errorlist" not in text
    assert "Campaign “Promo”: 1 of the 1 contacts in this campaign&#x27;s audience lack a value" in text
    assert finished.name not in text  # a finished campaign sends nothing more
    response = staff_client.post(
        f"/admin/messaging/messagetemplate/{template.pk}/change/",
        {
            "name": template.name,
            "channel": "sms",
            "locale": template.locale,
            "body": "Hello {{ name }}",
            "fallbacks": "{}",
        },
        follow=True,
    )
    assert "lack a value" not in response.content.decode()
