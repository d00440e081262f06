"""Local numbers: a default country for numbers written without a country code, in every door."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from audience.ingest.services import import_options_clean
from audience.models import Contact, ImportJob, ImportStatus
from audience.phones import InvalidPhone, normalize_phone
from audience.tasks import import_job_run
from tests.factories import UserFactory
from tests.ingest import write

# A list as a Kenyan team keeps it: national numbers with spaces, and numbers with the country
# code but no "+", with and without a dash.
LOCAL = [f"0722 {123400 + n}" for n in range(26)]
NO_PLUS = [f"254-7123{52300 + n}" for n in range(13)] + [f"2547133{52300 + n}" for n in range(13)]
KENYAN_CSV = "phone,name\n" + "".join(f"{phone},P{n}\n" for n, phone in enumerate(LOCAL + NO_PLUS))


def test_a_national_number_reads_as_the_default_countrys():
    assert normalize_phone("0722 123456", "KE") == "+254722123456"
    assert normalize_phone("whatsapp:0722-123-456", "KE") == "+254722123456"
    assert normalize_phone("(0)722 123456", "KE") == "+254722123456"


def test_a_country_code_written_without_its_plus_is_recognised_with_or_without_a_default():
    assert normalize_phone("254-712352353", "") == "+254712352353"
    assert normalize_phone("254712352353", "KE") == "+254712352353"
    assert normalize_phone("44 7911 123456", "KE") == "+447911123456"  # not a Kenyan number: its own code


def test_without_a_default_a_national_number_says_what_to_do():
    with pytest.raises(InvalidPhone) as caught:
        normalize_phone("0722 123456", "")
    assert caught.value.reason == "no country code; write it as +<country code><number>, or choose a default country"


def test_the_setting_is_the_default_for_every_door(settings):
    settings.PHONE_DEFAULT_COUNTRY = "KE"
    assert normalize_phone("0722123456") == "+254722123456"
    assert import_options_clean()["default_country"] == "KE"
    assert import_options_clean(default_country="")["default_country"] == ""


def test_a_country_that_is_not_one_is_refused_naming_the_field():
    with pytest.raises(Exception) as caught:
        import_options_clean(default_country="XX")
    assert "default_country" in caught.value.message_dict
    assert "'XX' is not a country code" in caught.value.message_dict["default_country"][0]


@pytest.mark.django_db(transaction=True)
def test_the_command_imports_the_kenyan_list_whole_with_a_default_country(tmp_path):
    path = write(tmp_path, "ke.csv", KENYAN_CSV)
    call_command("import_contacts", str(path), "--default-consent", "opted_in", "--default-country", "ke", verbosity=0)
    job = ImportJob.objects.get()
    assert (job.created_count, job.invalid_count) == (52, 0)
    assert Contact.objects.filter(phone="+254722123400").exists()
    assert Contact.objects.filter(phone__in=["+254712352300", "+254713352312"]).count() == 2


@pytest.mark.django_db(transaction=True)
def test_without_a_default_only_the_national_numbers_are_left_out_and_say_why(tmp_path):
    path = write(tmp_path, "ke.csv", KENYAN_CSV)
    call_command("import_contacts", str(path), "--default-consent", "opted_in", "--default-country", "", verbosity=0)
    job = ImportJob.objects.get()
    assert (job.created_count, job.invalid_count) == (26, 26)
    reasons = set(job.row_errors.values_list("reason", flat=True))
    assert reasons == {"no country code; write it as +<country code><number>, or choose a default country"}


@pytest.mark.django_db(transaction=True)
def test_the_command_refuses_a_country_that_is_not_one(tmp_path):
    path = write(tmp_path, "ke.csv", KENYAN_CSV)
    with pytest.raises(CommandError, match="--default-country: 'Kenya' is not a country code"):
        call_command("import_contacts", str(path), "--default-consent", "opted_in", "--default-country", "Kenya")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("roles", "media_root")
def test_the_api_takes_a_default_country_and_refuses_a_wrong_one(staff_api):
    def upload(country):
        return staff_api.post(
            "/api/v1/contacts/import",
            {
                "file": SimpleUploadedFile("ke.csv", KENYAN_CSV.encode()),
                "default_consent": "opted_in",
                "default_country": country,
            },
            format="multipart",
        )

    refused = upload("ZZ")
    assert refused.status_code == 400 and "default_country" in refused.json()
    response = upload("KE")
    assert response.status_code == 202, response.content
    import_job_run(response.json()["id"])
    job = ImportJob.objects.get(pk=response.json()["id"])
    assert (job.status, job.created_count, job.invalid_count) == (ImportStatus.SUCCEEDED, 52, 0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("media_root")
def test_the_admins_dry_run_reads_local_numbers_as_the_chosen_countrys(client, settings):
    settings.PHONE_DEFAULT_COUNTRY = "KE"
    client.force_login(UserFactory(username="boss", is_superuser=True))
    form = client.get("/admin/audience/contact/import/").content.decode()
    assert '<option value="KE" selected>Kenya (KE, +254)</option>' in form
    upload = SimpleUploadedFile("ke.csv", KENYAN_CSV.encode(), content_type="text/csv")
    page = client.post(
        "/admin/audience/contact/import/",
        {"import_file": upload, "resource": "0", "default_consent": "opted_in", "default_country": "KE"},
    )
    assert page.status_code == 200
    text = page.content.decode()
    assert "Dry run of ke.csv" in text and "no country code" not in text
    assert ImportJob.objects.get().options["default_country"] == "KE"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("media_root")
def test_a_dry_run_with_many_errors_asks_again_and_the_job_says_rows_were_left_out(client, settings):
    settings.PHONE_DEFAULT_COUNTRY = ""
    client.force_login(UserFactory(username="boss", is_superuser=True))
    upload = SimpleUploadedFile("ke.csv", KENYAN_CSV.encode(), content_type="text/csv")
    page = client.post(
        "/admin/audience/contact/import/",
        {"import_file": upload, "resource": "0", "default_consent": "opted_in", "default_country": ""},
    )
    text = page.content.decode()
    assert "26 of the 52 rows checked have errors" in text and 'name="accept_errors"' in text
    job = ImportJob.objects.get()

    refused = client.post("/admin/audience/contact/process_import/", {"job": job.pk})
    assert refused.status_code == 200 and "was not started" in refused.content.decode()
    job.refresh_from_db()
    assert job.status == ImportStatus.PENDING and not Contact.objects.exists()

    confirmed = client.post("/admin/audience/contact/process_import/", {"job": job.pk, "accept_errors": "1"})
    assert confirmed.status_code == 302
    job.refresh_from_db()
    if job.status == ImportStatus.QUEUED:
        import_job_run(job.pk)
        job.refresh_from_db()
    assert job.outcome == "Succeeded, 26 rows left out"
    assert "Succeeded, 26 rows left out" in client.get(f"/admin/audience/contact/import/{job.pk}/").content.decode()
    assert client.get(f"/admin/audience/contact/import/{job.pk}/status/").json()["status_label"] == job.outcome
    assert "Succeeded, 26 rows left out" in client.get("/admin/audience/importjob/").content.decode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("media_root")
def test_a_clean_dry_run_confirms_on_one_click(client, settings):
    client.force_login(UserFactory(username="boss", is_superuser=True))
    upload = SimpleUploadedFile("ke.csv", KENYAN_CSV.encode(), content_type="text/csv")
    page = client.post(
        "/admin/audience/contact/import/",
        {"import_file": upload, "resource": "0", "default_consent": "opted_in", "default_country": "KE"},
    )
    assert 'name="accept_errors"' not in page.content.decode()
    job = ImportJob.objects.get()
    assert client.post("/admin/audience/contact/process_import/", {"job": job.pk}).status_code == 302
    job.refresh_from_db()
    if job.status == ImportStatus.QUEUED:
        import_job_run(job.pk)
        job.refresh_from_db()
    assert job.outcome == "Succeeded"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "content",
    [
        "phone,name\nwhatsapp:+254712000001,A\n+254712000002,B\n",  # the fast CSV path
        'phone,name\nwhatsapp:+254712000001,"A, the first"\n+254712000002,B\n',  # quoted: the general path
        "phone,name,channel\nwhatsapp:+254712000001,A,\n+254712000002,B,\nwhatsapp:+254712000003,C,sms\n",
    ],
)
def test_a_whatsapp_prefix_sets_the_channel_unless_a_channel_column_says_otherwise(tmp_path, content):
    path = write(tmp_path, "wa.csv", content)
    call_command("import_contacts", str(path), "--default-consent", "opted_in", verbosity=0)
    channels = dict(Contact.objects.values_list("phone", "channel"))
    assert channels["+254712000001"] == "whatsapp" and channels["+254712000002"] == "sms"
    if "+254712000003" in channels:
        assert channels["+254712000003"] == "sms"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("media_root")
def test_the_dry_run_tells_unchanged_rows_from_updates_as_the_import_will(client, tmp_path):
    from audience import services as audience

    audience.contact_create(phone="+254712000001", name="Same", consent_status="opted_in")
    audience.contact_create(phone="+254712000002", name="Old name", consent_status="opted_in")
    content = "phone,name\n+254712000001,Same\n+254712000002,New name\n+254712000003,Fresh\n"
    client.force_login(UserFactory(username="boss", is_superuser=True))
    page = client.post(
        "/admin/audience/contact/import/",
        {
            "import_file": SimpleUploadedFile("c.csv", content.encode(), content_type="text/csv"),
            "resource": "0",
            "default_consent": "opted_in",
        },
    )
    summary = " ".join(page.content.decode().split())
    assert "<strong>1</strong> new, <strong>1</strong> to update, <strong>1</strong> unchanged" in summary
    job = ImportJob.objects.get()
    client.post("/admin/audience/contact/process_import/", {"job": job.pk})
    job.refresh_from_db()
    if job.status == ImportStatus.QUEUED:
        import_job_run(job.pk)
        job.refresh_from_db()
    assert (job.created_count, job.updated_count, job.unchanged_count) == (1, 1, 1)


@pytest.mark.django_db
def test_the_contact_page_links_to_the_persons_messages(client):
    from audience import services as audience
    from tests.factories import MessageFactory

    contact = audience.contact_create(phone="+254712000001", name="A")
    other = audience.contact_create(phone="+254712000002", name="B")
    MessageFactory(contact=contact, body="for A")
    MessageFactory(contact=other, body="for B")
    client.force_login(UserFactory(username="boss", is_superuser=True))
    page = client.get(f"/admin/audience/contact/{contact.pk}/change/").content.decode()
    link = f"/admin/messaging/message/?contact__id__exact={contact.pk}"
    assert link in page
    listing = client.get(link)
    assert listing.status_code == 200 and "1 message" in listing.content.decode()
