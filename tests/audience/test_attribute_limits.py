"""Contact attributes have limits (how many, name length, value length, total size) at every door.

An import row past a limit is a row error naming the line and the field; the API and the admin answer
with an error naming the attribute. The limits are settings.
"""

import json

import pytest

from audience.ingest.services import ImportRejected
from audience.models import Contact
from tests.factories import ContactFactory
from tests.ingest import ingest, problems, write

GOOD = {"phone": "+254712345601", "consent": "opted_in", "plan": "gold"}


def _jsonl(tmp_path, *rows: dict):
    return write(tmp_path, "contacts.jsonl", "".join(json.dumps(row) + "\n" for row in rows))


def _bad(phone: str, **attributes) -> dict:
    return {"phone": phone, "consent": "opted_in", **attributes}


def _deep(levels: int):
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.django_db(transaction=True)
def test_an_import_row_with_500000_attribute_keys_is_a_row_error_and_the_others_import(tmp_path):
    many = _bad("+254712345602", **{f"k{index}": 1 for index in range(500_000)})  # 6.5 MB: one record
    job = ingest(_jsonl(tmp_path, GOOD, many, {**GOOD, "phone": "+254712345603"}))
    assert sorted(Contact.objects.values_list("phone", flat=True)) == ["+254712345601", "+254712345603"]
    assert problems(job) == [(2, "attributes", "500000 attributes; at most 100 are allowed")]


@pytest.mark.django_db(transaction=True)
def test_each_attribute_limit_is_a_row_error_naming_the_line_and_the_field(tmp_path):
    rows = [
        GOOD,
        _bad("+254712345602", **{"k" * 65: "x"}),
        _bad("+254712345603", notes="n" * 2001),
        _bad("+254712345604", labels=["t" * 1000, "u" * 1000]),
        _bad("+254712345605", tree=_deep(64)),  # with the attributes object: 65 levels
        _bad("+254712345606", **{f"note{index}": "n" * 1900 for index in range(9)}),  # 17 KB in all
        _bad("+254712345607", notes="n" * 2000, tree=_deep(63), **{"k" * 64: 1}),  # every limit just met
    ]
    job = ingest(_jsonl(tmp_path, *rows))
    assert problems(job) == [
        (2, "k" * 65, "the attribute name is longer than 64 characters"),
        (3, "notes", "longer than 2000 characters"),
        (4, "labels", "longer than 2000 characters as JSON"),
        (5, "tree", "nested deeper than 64 levels"),
        (6, "attributes", "the attributes take 17200 bytes as JSON; at most 16384 are allowed"),
    ]
    assert sorted(Contact.objects.values_list("phone", flat=True)) == ["+254712345601", "+254712345607"]


@pytest.mark.django_db(transaction=True)
def test_a_csv_cell_too_long_or_a_row_too_big_is_a_row_error_naming_the_column(tmp_path):
    header = "phone,consent,notes," + ",".join(f"extra{index}" for index in range(8))
    rows = [
        "+254712345601,opted_in,short," + ",".join(["x"] * 8),
        "+254712345602,opted_in," + "n" * 2001 + "," + ",".join(["x"] * 8),
        "+254712345603,opted_in," + ",".join(["y" * 1990] * 9),  # 9 cells of 1,990: over 16 KB in all
    ]
    job = ingest(write(tmp_path, "contacts.csv", "\n".join([header, *rows]) + "\n"))
    reported = problems(job)
    assert reported[0] == (3, "notes", "longer than 2000 characters")
    assert reported[1][:2] == (4, "attributes") and "at most 16384 are allowed" in reported[1][2]
    assert list(Contact.objects.values_list("phone", flat=True)) == ["+254712345601"]


@pytest.mark.django_db(transaction=True)
def test_a_csv_header_past_a_limit_refuses_the_file_before_any_row(tmp_path):
    wide = "phone," + ",".join(f"c{index}" for index in range(101)) + "\n+254712345601" + "," * 101 + "\n"
    with pytest.raises(ImportRejected, match="101 attribute columns; a contact may have at most 100 attributes"):
        ingest(write(tmp_path, "wide.csv", wide))
    long_name = "l" * 65
    with pytest.raises(ImportRejected, match=f"column '{long_name}': the attribute name is longer than 64"):
        ingest(write(tmp_path, "long.csv", f"phone,{long_name}\n+254712345601,x\n"))


@pytest.mark.django_db(transaction=True)
def test_the_import_limits_are_settings_and_reach_the_worker_processes(tmp_path, settings):
    settings.ATTRIBUTES_MAX_KEYS = 2
    rows = [_bad("+254712345601", a=1, b=2), _bad("+254712345602", a=1, b=2, c=3)]
    job = ingest(_jsonl(tmp_path, *rows), workers=2)
    assert problems(job) == [(2, "attributes", "3 attributes; at most 2 are allowed")]
    assert list(Contact.objects.values_list("phone", flat=True)) == ["+254712345601"]


# --- API and admin ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({f"k{index}": index for index in range(101)}, "101 attributes; at most 100 are allowed"),
        ({"k" * 65: 1}, f"'{'k' * 65}': the attribute name is longer than 64 characters"),
        ({"notes": "n" * 2001}, "'notes': longer than 2000 characters"),
        ({f"n{index}": "n" * 1900 for index in range(9)}, "at most 16384 are allowed"),
    ],
)
def test_the_api_refuses_attributes_past_a_limit_naming_the_field(staff_api, attributes, message):
    body = {"phone": "+254712345601", "attributes": attributes}
    response = staff_api.post("/api/v1/contacts/", body, format="json")
    assert response.status_code == 400
    [error] = response.json()["attributes"]
    assert message in error
    assert not Contact.objects.exists()


@pytest.mark.django_db
def test_an_update_may_not_push_the_merged_attributes_past_the_limit(staff_api, settings):
    settings.ATTRIBUTES_MAX_KEYS = 3
    contact = ContactFactory(attributes={"a": 1, "b": 2})
    url = f"/api/v1/contacts/{contact.pk}/"
    response = staff_api.patch(url, {"attributes": {"c": 3, "d": 4}}, format="json")
    assert response.status_code == 400 and response.json()["attributes"] == ["4 attributes; at most 3 are allowed"]
    assert staff_api.patch(url, {"attributes": {"a": None, "c": 3, "d": 4}}, format="json").status_code == 200
    contact.refresh_from_db()
    assert contact.attributes == {"b": 2, "c": 3, "d": 4}


@pytest.mark.django_db
def test_the_admin_refuses_attributes_past_a_limit_with_a_message(client, staff_user):
    client.force_login(staff_user)
    contact = ContactFactory(attributes={"plan": "gold"})
    page = client.get(f"/admin/audience/contact/{contact.pk}/change/")
    form = page.context["adminform"].form
    data = {name: form.initial.get(name) or "" for name in form.fields}
    data |= {"phone": contact.phone, "attributes": json.dumps({"notes": "n" * 2001})}
    for inline in page.context["inline_admin_formsets"]:
        data |= {f"{inline.formset.prefix}-{name}": "0" for name in ("TOTAL_FORMS", "INITIAL_FORMS")}
    response = client.post(f"/admin/audience/contact/{contact.pk}/change/", data, follow=True)
    assert "longer than 2000 characters" in response.content.decode()
    contact.refresh_from_db()
    assert contact.attributes == {"plan": "gold"}
