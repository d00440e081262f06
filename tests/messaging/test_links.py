"""Tracked links: URLs in bodies become short per-recipient codes, the redirect answers and counts clicks.

Sends go through the real twilio client to the fake Twilio; the redirect is exercised through
Django's view and through the WSGI fast path gunicorn serves; clicks go through Redis's stream
and the drain, as in production.
"""

from datetime import timedelta

import pytest
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from campaigns.models import Recipient
from config.observe import redis_client
from messaging.links import codes, follow
from messaging.links.clicks import GROUP, clicks_drain, clicks_write, links_expire
from messaging.links.rewrite import url_with_params
from messaging.links.views import LinkFastPath
from messaging.models import Link, LinkClick, MessageTemplate, Sender
from messaging.rendering import sms_segments
from messaging.services import create, send
from tests.factories import ContactFactory, LinkFactory
from tests.fake_twilio import FakeTwilio
from tests.reporting.support import add_recipient, make_campaign, make_run

pytestmark = pytest.mark.django_db

SID = "AC" + "6c" * 16
TOKEN = "links-test-token"
LONG_URL = (
    "https://shop.example.com/collections/spring-sale-2026/womens-running-shoes"
    "?colour=green&size=42&ref=newsletter-footer&campaign=spring"
)


@pytest.fixture(autouse=True)
def clean_redis():
    client = redis_client()
    keys = list(client.scan_iter(follow.CACHE_PREFIX + "*"))
    client.delete(follow.STREAM, *keys)
    yield
    client.delete(follow.STREAM)


@pytest.fixture
def fake(settings):
    with FakeTwilio(account_sid=SID, auth_token=TOKEN, callbacks="off") as server:
        settings.MESSAGING_PROVIDER = "twilio"
        settings.TWILIO_ACCOUNT_SID = SID
        settings.TWILIO_AUTH_TOKEN = TOKEN
        settings.TWILIO_API_BASE_URL = server.base_url
        settings.PUBLIC_BASE_URL = "https://go.example.org"
        yield server


@pytest.fixture
def sender(db):
    return Sender.objects.create(
        name="sms", channel="sms", kind="long_code", provider="twilio", from_address="+15005550006"
    )


def sent_body(fake, message) -> str:
    message.refresh_from_db()
    return fake.request_form(message.provider_sid)["Body"]


def code_of(text: str) -> str:
    return text.split("https://go.example.org/l/", 1)[1].split()[0].rstrip(".")


# --- Codes ---------------------------------------------------------------------------------


def test_a_code_is_short_and_reads_back_to_its_message_and_position():
    code = codes.link_code(1_234_567, 3)
    assert len(code) <= 12
    assert codes.code_parse(code) == (1_234_567, 3)


def test_a_code_with_a_wrong_tag_or_foreign_characters_is_refused():
    code = codes.link_code(42, 0)
    forged = code[:-1] + ("A" if code[-1] != "A" else "B")
    assert codes.code_parse(forged) is None
    assert codes.code_parse(codes.link_code(43, 0)[:-6] + code[-6:]) is None  # another message, this tag
    assert codes.code_parse("ab$cdefgh") is None
    assert codes.code_parse("") is None


# --- Rewriting -----------------------------------------------------------------------------


def test_a_free_text_url_is_sent_as_a_short_link_and_keeps_its_sms_parts_down(fake, sender):
    contact = ContactFactory(phone="+254711400001", name="Amina")
    text = f"Hi {{{{ name }}}}, our spring sale is on: {LONG_URL}. See you!"
    message, _ = create.message_create(contact=contact, body=text, sender=sender, enqueue=False)
    message = send.message_send(message.pk)
    body = sent_body(fake, message)
    code = code_of(body)
    assert body == f"Hi Amina, our spring sale is on: https://go.example.org/l/{code}. See you!"
    assert codes.code_parse(code) == (message.pk, 0)
    assert Link.objects.get(message=message).url == LONG_URL
    assert message.body == body and message.segments == 1
    assert sms_segments(text.replace("{{ name }}", "Amina")).segments == 2  # as written it took two parts


def test_a_template_url_with_a_placeholder_is_tracked_per_recipient_and_an_opted_out_one_is_left(fake, sender):
    template = MessageTemplate.objects.create(
        name="offer",
        channel="sms",
        body="Your offer: https://shop.example.com/o/{{ attributes.offer }} - terms: notrack:https://example.com/terms",
    )
    bodies = {}
    for phone, offer in (("+254711400002", "A1"), ("+254711400003", "B2")):
        contact = ContactFactory(phone=phone, attributes={"offer": offer})
        message, _ = create.message_create(contact=contact, template=template, sender=sender, enqueue=False)
        message = send.message_send(message.pk)
        bodies[offer] = (message, sent_body(fake, message))
    for offer, (message, body) in bodies.items():
        assert body.endswith(" - terms: https://example.com/terms")  # the marker is gone, the URL as written
        assert "notrack" not in body
        assert list(Link.objects.filter(message=message).values_list("position", "url")) == [
            (0, f"https://shop.example.com/o/{offer}")
        ]
    assert code_of(bodies["A1"][1]) != code_of(bodies["B2"][1])


def test_rendering_again_gives_the_same_codes_and_one_row_per_link(fake, sender):
    from messaging.links.rewrite import links_save

    contact = ContactFactory(phone="+254711400004")
    text = "a https://a.example.com b https://b.example.com"
    message, _ = create.message_create(contact=contact, body=text, sender=sender, enqueue=False)
    send.render_fill(message)
    first = message.body
    links_save([message])
    message.refresh_from_db()
    send.render_fill(message)
    links_save([message])
    assert message.body == first and first.count("https://go.example.org/l/") == 2
    assert Link.objects.filter(message=message).count() == 2


def test_a_campaign_adds_its_utm_parameters_and_keeps_those_a_link_has(fake, sender):
    campaign = make_campaign(sender=sender, link_params={"utm_source": "sms", "utm_medium": "campaign"})
    run = make_run(campaign, status="running")
    recipient = add_recipient(
        run,
        contact=ContactFactory(phone="+254711400005"),
        message_status="pending",
        body="Sale: https://shop.example.com/sale?utm_medium=partner#top",
        body_source="Sale: https://shop.example.com/sale?utm_medium=partner#top",
    )
    message = send.message_send(recipient.message_id)
    assert message.status == "queued", message.skip_reason
    link = Link.objects.get(message=message)
    assert link.url == "https://shop.example.com/sale?utm_medium=partner&utm_source=sms#top"


def test_url_parameters_are_added_only_when_missing():
    assert url_with_params("https://a.example.com/x", {"utm_source": "sms"}) == "https://a.example.com/x?utm_source=sms"
    assert url_with_params("https://a.example.com/?utm_source=mail", {"utm_source": "sms"}) == (
        "https://a.example.com/?utm_source=mail"
    )
    assert url_with_params("https://a.example.com/?q=1", {"c": "a b"}) == "https://a.example.com/?q=1&c=a%20b"


# --- The redirect --------------------------------------------------------------------------


def _code(link: Link) -> str:
    return codes.link_code(link.message_id, link.position)


def test_the_redirect_answers_302_to_the_url_and_counts_each_click_once_drained(client):
    link = LinkFactory(url="https://shop.example.com/spring?utm_source=sms")
    for _ in range(3):
        response = client.get(f"/l/{_code(link)}")
        assert response.status_code == 302
        assert response["Location"] == "https://shop.example.com/spring?utm_source=sms"
    assert clicks_drain() == 3
    link.refresh_from_db()
    assert link.clicks == 3 and link.first_clicked_at is not None
    assert LinkClick.objects.filter(link=link).count() == 3
    assert clicks_drain() == 0


@pytest.mark.parametrize(
    "agent",
    [
        "WhatsApp/2.23.20.0 A",
        "facebookexternalhit/1.1 Facebot Twitterbot/1.0",  # iMessage's preview
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "TelegramBot (like TwitterBot)",
    ],
)
def test_link_preview_fetches_follow_the_link_but_are_not_counted(client, agent):
    link = LinkFactory()
    response = client.get(f"/l/{_code(link)}", headers={"User-Agent": agent})
    assert response.status_code == 302
    clicks_drain()
    link.refresh_from_db()
    assert link.clicks == 0


def test_a_head_request_is_answered_but_not_counted(client):
    link = LinkFactory()
    assert client.head(f"/l/{_code(link)}").status_code == 302
    client.get(f"/l/{_code(link)}", headers={"User-Agent": "Mozilla/5.0 (iPhone)"})
    clicks_drain()
    link.refresh_from_db()
    assert link.clicks == 1


def test_an_unknown_forged_or_expired_code_gets_a_plain_page(client):
    expired = LinkFactory(expires_at=timezone.now() - timedelta(seconds=1))
    live = LinkFactory()
    forged = _code(live)[:-1] + ("x" if _code(live)[-1] != "x" else "y")
    for code in (codes.link_code(999_999_999, 0), forged, _code(expired), "nonsense"):
        response = client.get(f"/l/{code}")
        assert response.status_code == 404
        assert response["Content-Type"].startswith("text/html")
        assert b"unknown or has expired" in response.content
    clicks_drain()
    assert LinkClick.objects.count() == 0


def test_retention_blanks_expired_links_and_keeps_their_counts(client):
    link = LinkFactory(expires_at=timezone.now() - timedelta(days=1), clicks=4)
    assert links_expire() == 1
    link.refresh_from_db()
    assert (link.url, link.clicks) == ("", 4)


@pytest.fixture
def request_signals_keep_the_connection():
    """As Django's test client does: the test's transaction survives the request signals."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


def test_the_wsgi_fast_path_redirects_without_django_and_passes_other_paths_on(request_signals_keep_the_connection):
    link = LinkFactory(url="https://shop.example.com/ünï")
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    def django_app(environ, start_response):
        start_response("200 OK", [])
        return [b"django"]

    app = LinkFastPath(django_app)
    environ = {"PATH_INFO": f"/l/{_code(link)}", "REQUEST_METHOD": "GET", "HTTP_USER_AGENT": "Mozilla/5.0"}
    assert app(environ, start_response) == [b""]
    assert seen["status"] == "302 Found"
    assert seen["headers"]["Location"] == "https://shop.example.com/%C3%BCn%C3%AF"
    assert app({"PATH_INFO": "/l/zzzzzzzzzz", "REQUEST_METHOD": "GET"}, start_response)[0].startswith(b"<!doctype")
    assert seen["status"] == "404 Not Found"
    assert app({"PATH_INFO": "/health/", "REQUEST_METHOD": "GET"}, start_response) == [b"django"]
    assert clicks_drain() == 1


def test_the_redirect_logs_no_phone_number(client, caplog):
    link = LinkFactory(message__contact=ContactFactory(phone="+254711499999"))
    with caplog.at_level("DEBUG"):
        client.get(f"/l/{_code(link)}")
        client.get("/l/unknowncode1")
        clicks_drain()
    assert "254711499999" not in caplog.text


# --- Exactly once --------------------------------------------------------------------------


def test_a_drain_killed_before_acknowledging_is_made_good_by_the_next_without_counting_twice(client, monkeypatch):
    link = LinkFactory()
    for _ in range(5):
        client.get(f"/l/{_code(link)}")
    redis = redis_client()
    from messaging.links.clicks import _group_ensure, _parsed

    _group_ensure(redis)
    # A drain takes the five, writes three of them, and dies before its acknowledgement.
    entries = redis.xreadgroup(GROUP, "dead-worker", {follow.STREAM: ">"}, count=100)[0][1]
    assert len(entries) == 5
    assert clicks_write(_parsed(entries[:3])) == 3
    assert clicks_drain() == 0  # still the dead drain's, not idle long enough to be taken over
    monkeypatch.setattr("messaging.links.clicks.RECLAIM_AFTER_MS", 0)
    assert clicks_drain() == 2  # re-run: the two missing are written, the three are not written again
    link.refresh_from_db()
    assert link.clicks == 5
    assert LinkClick.objects.filter(link=link).count() == 5
    assert redis.xlen(follow.STREAM) == 0
    assert redis.xpending(follow.STREAM, GROUP)["pending"] == 0


def test_a_click_is_written_to_the_database_when_redis_is_away(client, monkeypatch):
    import redis as redis_lib

    link = LinkFactory()
    url = f"/l/{_code(link)}"
    client.get(url)  # cached while Redis answers
    broken = redis_lib.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    monkeypatch.setattr(follow, "redis_client", lambda: broken)
    assert client.get(url).status_code == 302  # resolved from the database
    link.refresh_from_db()
    assert link.clicks == 1  # the second click, written at once
    monkeypatch.undo()
    clicks_drain()
    link.refresh_from_db()
    assert link.clicks == 2


def test_a_recipient_click_is_traced_to_its_campaign_message():
    campaign = make_campaign()
    recipient = add_recipient(make_run(campaign), message_status="delivered")
    link = LinkFactory(message=recipient.message)
    link.message.refresh_from_db()
    assert link.message.source_type == ContentType.objects.get_for_model(Recipient)
    assert link.message.source_id == recipient.pk


def test_erasing_a_contact_blanks_its_links_urls_and_the_code_stops_answering(client):
    from audience import services as audience

    contact = ContactFactory(phone="+254711488888")
    link = LinkFactory(message__contact=contact, url="https://shop.example.com/?email=amina@example.com", clicks=2)
    assert client.head(f"/l/{_code(link)}").status_code == 302  # now cached
    audience.contact_erase(contact, actor="test")
    link.refresh_from_db()
    assert (link.url, link.clicks) == ("", 2)
    assert client.get(f"/l/{_code(link)}").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_drains_running_at_once_count_every_click_once_without_deadlocking(monkeypatch):
    import threading
    import time
    import uuid

    from django.db import connection

    links = [LinkFactory() for _ in range(20)]
    redis = redis_client()
    pipe = redis.pipeline(transaction=False)
    for n in range(6000):  # each batch touches the twenty links in its own order
        pipe.xadd(follow.STREAM, {"k": uuid.uuid4().bytes, "l": links[(n * 7) % 20].pk, "t": int(time.time() * 1000)})
    pipe.execute()
    monkeypatch.setattr("messaging.links.clicks.READ_COUNT", 150)
    errors = []

    def drain(n: int) -> None:
        try:
            clicks_drain(consumer=f"drain-{n}")
        except Exception as exc:  # noqa: BLE001 - the test reports whatever a drain raised
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=drain, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(Link.objects.values_list("clicks", flat=True)) == [300] * 20
    assert LinkClick.objects.count() == 6000
