"""The answer to a transactional send: one serializer per thread, each request masked by its own user."""

from unittest import mock

import pytest
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory, force_authenticate

from config import observe
from config.api import represent
from messaging.api_messages import MessageSerializer
from messaging.models import Message, MessageTemplate, Sender
from messaging.services import create, send_queue
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db


def _request(user):
    request = APIRequestFactory().get("/api/v1/messages/")
    force_authenticate(request, user=user)
    request = Request(request)
    request.user = user
    return request


def _message(phone: str) -> Message:
    sender = Sender.objects.get_or_create(
        name="sms", channel="sms", kind="long_code", provider="simulated", from_address="+15005550006"
    )[0]
    template = MessageTemplate.objects.get_or_create(name="otp", channel="sms", body="Your code: 123456")[0]
    return create.message_create(contact=ContactFactory(phone=phone), template=template, sender=sender)[0]


def test_the_reused_serializer_masks_by_each_requests_user_and_shows_each_message(staff_user, analyst_user):
    first, second = _message("+254712000001"), _message("+254712000002")
    staff, analyst = _request(staff_user), _request(analyst_user)
    assert represent(MessageSerializer, first, {"request": staff})["to_address"] == "+254712000001"
    masked = represent(MessageSerializer, second, {"request": analyst})
    assert masked["id"] == second.pk and masked["to_address"] == "+2547******02"
    again = represent(MessageSerializer, first, {"request": staff})
    assert again["id"] == first.pk and again["to_address"] == "+254712000001"
    assert again == MessageSerializer(first, context={"request": staff}).data


@pytest.mark.django_db(transaction=True)  # as in production: the request is in no transaction
@pytest.mark.usefixtures("roles")  # a transactional test starts after a flush: the role groups made again
def test_a_transactional_send_inserts_without_looking_its_key_up_and_queues_after_commit(
    staff_api, django_assert_num_queries
):
    message = _message("+254712000003")  # its sender and template
    contact = ContactFactory(phone="+254712000004")
    body = {"contact": contact.pk, "template": message.template_id, "sender": message.sender_id}
    staff_api.get("/api/v1/messages/")  # the token and its permissions remembered
    redis = observe.redis_client()
    redis.delete(send_queue.queue_key(message.sender_id), send_queue.KICK_KEY, send_queue.READY_KEY)
    with mock.patch("messaging.tasks.messages_send_queued.delay") as wake, django_assert_num_queries(2) as queries:
        answer = staff_api.post("/api/v1/messages/", body, format="json", HTTP_IDEMPOTENCY_KEY="otp-1")
    assert answer.status_code == 202 and answer.json()["to_address"] == "+254712000004"
    queued = redis.zrange(send_queue.queue_key(message.sender_id), 0, -1)
    assert queued == [str(answer.json()["id"]).encode()]  # in its sender's queue, once committed
    wake.assert_called_once_with()  # no drain was queued: this one wakes one
    statements = [query["sql"].split()[0] for query in queries.captured_queries]
    assert statements == ["SELECT", "INSERT"]  # contact, template and sender in one; no key lookup
    replay = staff_api.post("/api/v1/messages/", body, format="json", HTTP_IDEMPOTENCY_KEY="otp-1")
    assert replay.status_code == 200 and replay.json()["id"] == answer.json()["id"]
