"""What staff read is in words, not codes: consent events, the segment form, the import's dry run."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from audience.models import ConsentEvent, ConsentEventKind
from tests.factories import UserFactory
from tests.fixtures.ingest.helpers import media_root  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db


def test_a_consent_event_reads_as_words():
    first = ConsentEvent(kind=ConsentEventKind.CHANGE, from_status="", to_status="opted_in", source="import")
    change = ConsentEvent(kind=ConsentEventKind.CHANGE, from_status="opted_in", to_status="opted_out", source="keyword")
    assert str(first) == "Opted in (Import)"
    assert str(change) == "Opted in → Opted out (Keyword)"


def test_a_new_segment_form_has_an_empty_rule_box_not_null(client):
    client.force_login(UserFactory(username="boss", is_superuser=True))
    page = client.get("/admin/campaigns/segment/add/").content.decode()
    assert ">null</textarea>" not in page


@pytest.mark.usefixtures("media_root")
def test_the_dry_run_shows_topics_as_a_list_and_attributes_as_pairs(client):
    client.force_login(UserFactory(username="boss", is_superuser=True))
    content = "phone,name,topics,city,age\n+254712000001,A,events|promos,Nairobi,34\n"
    page = client.post(
        "/admin/audience/contact/import/",
        {
            "import_file": SimpleUploadedFile("c.csv", content.encode(), content_type="text/csv"),
            "resource": "0",
            "default_consent": "opted_in",
        },
    ).content.decode()
    assert "events, promos" in page and "{events,promos}" not in page
    assert "age: 34<br>city: Nairobi" in page
