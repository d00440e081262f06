import json

import pytest
from django.core.exceptions import ValidationError

from messaging.models import MessageTemplate
from messaging.rendering import GSM7, UCS2, sms_segments
from messaging.services.templates import template_create, template_preview, template_render, template_update
from tests.factories import ContactFactory

HX = "HX" + "a1" * 16


def sms_template(body: str, **extra) -> MessageTemplate:
    return MessageTemplate(name="t", channel="sms", body=body, **extra)


# --- rendering -----------------------------------------------------------------------------


def test_contact_fields_and_attributes_are_substituted():
    contact = ContactFactory.build(name="Amina", phone="+254712345678", attributes={"city": "Nairobi", "visits": 3})
    template = sms_template("Hi {{ name }} from {{attributes.city}} ({{ attributes.visits }}), {{ phone }}")
    result = template_render(template, contact=contact)
    assert result.ok
    assert result.text == "Hi Amina from Nairobi (3), +254712345678"


def test_a_missing_value_is_reported_never_rendered_as_a_hole():
    contact = ContactFactory.build(name="", attributes={})
    result = template_render(sms_template("Hi {{ name }} in {{ attributes.city }}"), contact=contact)
    assert not result.ok
    assert result.missing == ["name", "attributes.city"]
    assert result.skip_reason == "missing variable name, attributes.city"


def test_fallbacks_fill_missing_values_but_not_present_ones():
    template = sms_template("Hi {{ name }} in {{ attributes.city }}", fallbacks={"name": "there"})
    result = template_render(template, contact=ContactFactory.build(name="", attributes={"city": "Mombasa"}))
    assert result.text == "Hi there in Mombasa"
    result = template_render(template, contact=ContactFactory.build(name="Joy", attributes={"city": "Mombasa"}))
    assert result.text == "Hi Joy in Mombasa"


def test_blank_strings_count_as_missing():
    result = template_render(
        sms_template("{{ attributes.code }}"), contact=ContactFactory.build(attributes={"code": " "})
    )
    assert result.missing == ["attributes.code"]


def test_event_values_come_from_the_context():
    template = sms_template("Paid {{ event.amount }} for order {{ event.order }}")
    result = template_render(template, contact=ContactFactory.build(), context={"amount": 12.5, "order": "A1"})
    assert result.text == "Paid 12.5 for order A1"


def test_the_renderer_is_not_the_django_template_engine():
    template = sms_template("{% if 1 %}x{% endif %} {{ name }}")
    assert template_render(template, sample={"name": "Amina"}).text == "{% if 1 %}x{% endif %} Amina"


def test_sample_values_may_be_flat_or_nested():
    template = sms_template("{{ name }} / {{ attributes.city }} / {{ attributes.zone }}")
    result = template_render(template, sample={"name": "A", "attributes.city": "B", "attributes": {"zone": "C"}})
    assert result.text == "A / B / C"


# --- validation ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_unknown_placeholders_are_refused_naming_them():
    with pytest.raises(ValidationError) as caught:
        template_create(name="bad", channel="sms", body="Hi {{ nme }} {{ name|upper }} {{ attributes.city }}")
    message = " ".join(caught.value.message_dict["body"])
    assert "nme" in message and "name|upper" in message
    assert "attributes.city" not in message.split(";")[0]
    assert not MessageTemplate.objects.exists()


@pytest.mark.django_db
def test_fallbacks_must_name_known_placeholders():
    with pytest.raises(ValidationError) as caught:
        template_create(name="bad", channel="sms", body="Hi {{ name }}", fallbacks={"nmae": "there"})
    assert "nmae" in caught.value.message_dict["fallbacks"][0]


@pytest.mark.django_db
def test_update_validates_too():
    template = template_create(name="ok", channel="sms", body="Hi {{ name }}")
    with pytest.raises(ValidationError):
        template_update(template, data={"body": "Hi {{ first_name }}"})
    template.refresh_from_db()
    assert template.body == "Hi {{ name }}"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "field", "text"),
    [
        ({"channel": "whatsapp", "content_sid": "HX123"}, "content_sid", "32 hexadecimal"),
        ({"channel": "sms", "content_sid": HX}, "content_sid", "WhatsApp templates only"),
        ({"channel": "whatsapp", "content_sid": HX, "content_variables": {"one": "name"}}, "content_variables", "1, 2"),
        ({"channel": "whatsapp", "content_sid": HX, "content_variables": {"1": "nick"}}, "content_variables", "nick"),
        ({"channel": "whatsapp", "content_variables": {"1": "name"}}, "content_variables", "need a Content SID"),
    ],
)
def test_whatsapp_content_templates_are_validated(fields, field, text):
    with pytest.raises(ValidationError) as caught:
        template_create(name="wa", body="Hello", **fields)
    assert text in " ".join(caught.value.message_dict[field])


@pytest.mark.django_db
def test_content_variables_render_as_twilio_content_variables():
    template = template_create(
        name="wa",
        channel="whatsapp",
        body="Hello {{ name }}, your order ships to {{ attributes.city }}",
        content_sid=HX,
        content_variables={"1": "name", "2": "{{ attributes.city }}"},
    )
    contact = ContactFactory.build(name="Amina", attributes={"city": "Kisumu"})
    result = template_render(template, contact=contact)
    assert result.content_variables == {"1": "Amina", "2": "Kisumu"}
    assert json.loads(result.content_variables_json) == {"1": "Amina", "2": "Kisumu"}
    missing = template_render(template, contact=ContactFactory.build(name="Amina", attributes={}))
    assert missing.skip_reason == "missing variable attributes.city"


# --- SMS segments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("", GSM7, 0),
        ("a" * 160, GSM7, 1),
        ("a" * 161, GSM7, 2),
        ("a" * 306, GSM7, 2),
        ("a" * 307, GSM7, 3),
        ("€" * 80, GSM7, 1),  # extension characters count two septets: 160
        ("€" * 81, GSM7, 2),
        ("a" * 151 + "€" + "a" * 153, GSM7, 2),  # 306 septets; the escape pair ends part one exactly
        ("a" * 152 + "€" + "a" * 152, GSM7, 3),  # 306 septets, but € cannot straddle parts 1 and 2
        ("Café ñ Ä ü @£$¥", GSM7, 1),
        ("a" * 70 + "ç", UCS2, 2),  # ç (lower case) is not in GSM-7: one such character switches all
        ("ç" * 70, UCS2, 1),
        ("ç" * 134, UCS2, 2),
        ("ç" * 135, UCS2, 3),
        ("😀" * 35, UCS2, 1),  # a surrogate pair counts two units
        ("😀" * 36, UCS2, 2),
        ("a" * 66 + "😀" + "a" * 66, UCS2, 3),  # 134 units, the pair cannot straddle parts
    ],
)
def test_segment_counting(text, encoding, segments):
    counted = sms_segments(text)
    assert (counted.encoding, counted.segments) == (encoding, segments)


@pytest.mark.django_db
def test_preview_reports_text_missing_segments_and_encoding():
    template = template_create(name="p", channel="sms", body="Hi {{ name }} ✓ {{ attributes.city }}")
    preview = template_preview(template, sample={"name": "Amina"})
    assert preview["text"] == "Hi Amina ✓ {{ attributes.city }}"
    assert preview["missing_variables"] == ["attributes.city"]
    assert preview["encoding"] == UCS2
    assert preview["segments"] == 1


@pytest.mark.django_db
def test_admin_preview_against_a_chosen_contact(client, staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    contact = ContactFactory(name="Wanjiru", attributes={"city": "Nyeri"})
    template = template_create(name="adm", channel="sms", body="Hi {{ name }} from {{ attributes.city }}")
    url = f"/admin/messaging/messagetemplate/{template.pk}/preview/"
    response = client.get(url, {"contact": contact.phone})
    html = response.content.decode()
    assert response.status_code == 200
    assert "Hi Wanjiru from Nyeri" in html and "GSM-7" in html and "SMS segments" in html
    assert (
        "Preview against a contact"
        in client.get(f"/admin/messaging/messagetemplate/{template.pk}/change/").content.decode()
    )


@pytest.mark.django_db
def test_admin_refuses_a_template_with_unknown_placeholders(client, staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    response = client.post(
        "/admin/messaging/messagetemplate/add/",
        {
            "name": "x",
            "channel": "sms",
            "locale": "en",
            "body": "Hi {{ nickname }}",
            "fallbacks": "{}",
            "content_variables": "{}",
        },
    )
    assert response.status_code == 200
    assert "unknown placeholder(s): nickname" in response.content.decode()
    assert not MessageTemplate.objects.exists()
    fields = {
        "name": "ok",
        "channel": "sms",
        "locale": "en",
        "body": "Hi {{ name }}",
        "fallbacks": "",
        "content_variables": "",
    }
    assert client.post("/admin/messaging/messagetemplate/add/", fields).status_code == 302
    assert MessageTemplate.objects.get(name="ok").fallbacks == {}


@pytest.mark.django_db
def test_admin_pages_of_senders_and_messages_render(client, staff_user):
    from messaging.models import Message, Sender
    from messaging.services.create import message_create

    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    sender = Sender.objects.create(name="sms", channel="sms", kind="long_code_us", from_address="+15005550006")
    message, _ = message_create(contact=ContactFactory(), sender=sender, body="Hi", enqueue=False)
    assert "1 (default)" in client.get("/admin/messaging/sender/").content.decode()
    for url in (
        "/admin/messaging/message/",
        f"/admin/messaging/message/{message.pk}/change/",
        "/admin/messaging/providercallback/",
    ):
        assert client.get(url).status_code == 200, url
    refused = client.post(
        "/admin/messaging/sender/add/",
        {"name": "wa", "provider": "twilio", "channel": "whatsapp", "kind": "whatsapp", "from_address": "+1500555"},
    )
    assert refused.status_code == 200 and "whatsapp:+E.164" in refused.content.decode()
    assert Message.objects.count() == 1 and Sender.objects.count() == 1
