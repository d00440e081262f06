from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from audience.models import ConsentStatus, Contact, Topic


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    is_staff = True

    @factory.post_generation
    def role(self, create, extracted, **kwargs):
        if extracted:
            self.groups.add(Group.objects.get(name=extracted))


class TopicFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Topic
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"topic-{n}")


class ContactFactory(factory.django.DjangoModelFactory):
    """Inserts rows directly; tests of business rules go through audience.services instead."""

    class Meta:
        model = Contact

    phone = factory.Sequence(lambda n: f"+2547{n:08d}")
    name = factory.Faker("name")
    consent_status = ConsentStatus.OPTED_IN
    attributes = factory.LazyFunction(dict)


class MessageTemplateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "messaging.MessageTemplate"

    name = factory.Sequence(lambda n: f"template-{n}")
    channel = "sms"
    body = "Hello {{ name }}"


class SenderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "messaging.Sender"

    name = factory.Sequence(lambda n: f"sender-{n}")
    provider = "simulated"
    channel = "sms"
    kind = "long_code"
    from_address = factory.Sequence(lambda n: f"+4474{n:08d}")


class MessageFactory(factory.django.DjangoModelFactory):
    """An outbound message, as the send service leaves one that went out."""

    class Meta:
        model = "messaging.Message"

    contact = factory.SubFactory(ContactFactory)
    sender = factory.SubFactory(SenderFactory)
    direction = "outbound"
    channel = "sms"
    status = "sent"
    body = "Hello"
    to_address = factory.LazyAttribute(lambda message: message.contact.phone)
    from_address = factory.LazyAttribute(lambda message: message.sender.from_address)


class LinkFactory(factory.django.DjangoModelFactory):
    """A tracked link of a message, as the send service saves one."""

    class Meta:
        model = "messaging.Link"

    message = factory.SubFactory(MessageFactory)
    position = 0
    url = "https://shop.example.com/spring"
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=90))


class ConversionFactory(factory.django.DjangoModelFactory):
    """A goal event attributed to a campaign run (recipient and message optional)."""

    class Meta:
        model = "campaigns.Conversion"

    event_id = factory.Sequence(lambda n: 10_000_000 + n)
    model = "last_message"
    event_name = "order_placed"
    occurred_at = factory.LazyFunction(timezone.now)
    touched_at = factory.LazyAttribute(lambda conversion: conversion.occurred_at)
