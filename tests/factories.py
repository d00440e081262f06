import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

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


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "campaigns.Campaign"

    name = factory.Sequence(lambda n: f"campaign-{n}")
    template = factory.SubFactory(MessageTemplateFactory)
    sender = factory.SubFactory(SenderFactory)


class VariantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "campaigns.Variant"

    campaign = factory.SubFactory(CampaignFactory)
    label = factory.Sequence(lambda n: f"Variant {n}")
    template = factory.SubFactory(MessageTemplateFactory)
    weight = 1
