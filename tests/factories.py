from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from audience.models import ConsentSource, ConsentStatus, Contact, ImportSource, Topic


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


class CampaignFactory(factory.django.DjangoModelFactory):
    """A draft one-off campaign; tests of the status machine go through campaigns.services."""

    class Meta:
        model = "campaigns.Campaign"

    name = factory.Sequence(lambda n: f"campaign-{n}")
    template = factory.SubFactory(MessageTemplateFactory)
    sender = factory.SubFactory(SenderFactory)


class CampaignRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "campaigns.CampaignRun"

    campaign = factory.SubFactory(CampaignFactory)
    scheduled_for = factory.LazyFunction(timezone.now)
    status = "completed"
    mps = 10


class RecipientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "campaigns.Recipient"

    run = factory.SubFactory(CampaignRunFactory)
    contact = factory.SubFactory(ContactFactory)
    state = "pending"


class SegmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "campaigns.Segment"

    name = factory.Sequence(lambda n: f"segment-{n}")
    definition = factory.LazyFunction(lambda: {"field": "email", "op": "exists"})


class EventFactory(factory.django.DjangoModelFactory):
    """A stored customer event, as the events API leaves one before matching."""

    class Meta:
        model = "campaigns.Event"

    contact = factory.SubFactory(ContactFactory)
    name = "order_shipped"
    idempotency_key = factory.Sequence(lambda n: f"event-{n}")
    properties = factory.LazyFunction(dict)
    occurred_at = factory.LazyFunction(timezone.now)


class ImportJobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "audience.ImportJob"

    source = ImportSource.API
    file_path = "imports/contacts.csv"
    file_name = "contacts.csv"
    file_format = "csv"


class SuppressionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "audience.Suppression"

    phone_hash = factory.Sequence(lambda n: f"{n:064x}")
    reason = "erased"
    source = ConsentSource.KEYWORD


class ProviderCallbackFactory(factory.django.DjangoModelFactory):
    """A provider status callback as stored for a message."""

    class Meta:
        model = "messaging.ProviderCallback"

    message = factory.SubFactory(MessageFactory, provider_sid=factory.Sequence(lambda n: f"SM{n:032x}"))
    kind = "status"
    provider_sid = factory.LazyAttribute(lambda event: event.message.provider_sid)
    status = "delivered"
    payload = factory.LazyAttribute(lambda event: {"MessageSid": event.provider_sid, "MessageStatus": event.status})


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
    run = factory.SubFactory(CampaignRunFactory)
    campaign = factory.LazyAttribute(lambda conversion: conversion.run.campaign)
    model = "last_message"
    event_name = "order_placed"
    occurred_at = factory.LazyFunction(timezone.now)
    touched_at = factory.LazyAttribute(lambda conversion: conversion.occurred_at)


class VariantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "campaigns.Variant"

    campaign = factory.SubFactory(CampaignFactory)
    label = factory.Sequence(lambda n: f"Variant {n}")
    template = factory.SubFactory(MessageTemplateFactory)
    weight = 1
