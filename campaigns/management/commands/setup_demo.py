"""Create the demo users, contacts, senders, templates, a segment and a campaign (idempotent).

Only for the embedded default (`make run`): it refuses to run with DEBUG off.
"""

from __future__ import annotations

import random

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from audience import services
from audience.models import ConsentSource, ConsentStatus, Contact
from campaigns import services as campaign_services
from campaigns.models import Campaign, Segment
from config.roles import ANALYSTS, STAFF
from messaging.models import MessageTemplate, Sender
from messaging.services.create import MessageRequestError, message_create

DEMO_USERS = {
    "admin": {"password": "admin-demo-pass", "superuser": True, "group": STAFF},
    "analyst": {"password": "analyst-demo-pass", "superuser": False, "group": ANALYSTS},
}
# (city, time zone, number prefix, digits after the prefix): valid mobile ranges for each country.
CITIES = [
    ("Nairobi", "Africa/Nairobi", "+2547", 8),
    ("Lagos", "Africa/Lagos", "+234803", 7),
    ("London", "Europe/London", "+4474", 8),
    ("New York", "America/New_York", "+12122", 6),
]
TOPICS = ["promotions", "alerts", "newsletter", "vip"]


class Command(BaseCommand):
    help = "Create demo users (printed), contacts, senders, templates, a segment and a campaign (DEBUG only)."

    def add_arguments(self, parser):
        parser.add_argument("--contacts", type=int, default=200)

    def handle(self, *args, contacts: int, **options):
        if not settings.DEBUG:
            raise CommandError("setup_demo only runs with DEBUG on; it creates users with known passwords")
        self._users()
        self._contacts(contacts)
        self._prices()
        self._messaging()

    def _prices(self):
        """The simulated provider's prices for the demo contacts' countries, so dry runs estimate a cost."""
        from messaging.models import PriceTable
        from messaging.pricing.table import audience_countries, price_table_refresh

        if settings.MESSAGING_PROVIDER != "simulated" or PriceTable.objects.exists():
            return
        result = price_table_refresh(audience_countries())
        self.stdout.write(f"  demo prices: {len(result.updated)} from the simulated provider")

    def _users(self):
        User = get_user_model()
        for username, spec in DEMO_USERS.items():
            user, created = User.objects.get_or_create(username=username, defaults={"is_staff": True})
            if created:
                user.is_superuser = spec["superuser"]
                user.set_password(spec["password"])
                user.save()
            user.groups.add(Group.objects.get(name=spec["group"]))
            self.stdout.write(f"  demo login: {username} / {spec['password']}")

    def _contacts(self, count: int):
        existing = Contact.objects.count()
        if existing >= count:
            self.stdout.write(f"  demo contacts: {existing} already present")
            return
        rng = random.Random(42)
        topics = {name: services.topic_get_or_create(name) for name in TOPICS}
        first_names = ["Amina", "Brian", "Chen", "Dara", "Esi", "Femi", "Grace", "Hiro", "Ivy", "Jomo"]
        for index in range(existing, count):
            city, tz, prefix, digits = CITIES[index % len(CITIES)]
            phone = prefix + str(index).rjust(digits, "0")
            try:
                services.contact_create(
                    phone=phone,
                    name=f"{rng.choice(first_names)} {index}",
                    channel=rng.choice(["whatsapp", "sms"]),
                    timezone=tz,
                    locale="en",
                    attributes={
                        "city": city,
                        "age": rng.randint(18, 70),
                        "vip": rng.random() < 0.1,
                        "signup_date": f"2026-{rng.randint(1, 10):02d}-{rng.randint(1, 28):02d}",
                        "lifetime_value": round(rng.uniform(0, 500), 2),
                    },
                    topics=[topics[name] for name in rng.sample(TOPICS, rng.randint(0, 2))],
                    consent_status=ConsentStatus.OPTED_OUT if rng.random() < 0.05 else ConsentStatus.OPTED_IN,
                    source=ConsentSource.IMPORT,
                    actor="setup_demo",
                )
            except services.ContactError as exc:
                self.stderr.write(f"  skipped demo contact {phone}: {exc.messages}")
                continue
        self.stdout.write(f"  demo contacts: {Contact.objects.count()}")

    def _messaging(self):
        sms, _ = Sender.objects.get_or_create(
            name="Demo SMS (simulated)",
            # 2 messages a second: the demo campaign takes about half a minute, so the dashboard and
            # the admin's progress bar are seen filling up live.
            defaults={
                "provider": "simulated",
                "channel": "sms",
                "kind": "long_code",
                "from_address": "+447400123456",
                "mps": 2,
            },
        )
        whatsapp, _ = Sender.objects.get_or_create(
            name="Demo WhatsApp (simulated)",
            defaults={
                "provider": "simulated",
                "channel": "whatsapp",
                "kind": "whatsapp",
                "from_address": "whatsapp:+447400123457",
            },
        )
        welcome, _ = MessageTemplate.objects.get_or_create(
            name="welcome-sms",
            defaults={
                "channel": "sms",
                "body": "Hi {{ name }}, welcome to our {{ attributes.city }} community!",
                "fallbacks": {"attributes.city": "local"},
            },
        )
        MessageTemplate.objects.get_or_create(
            name="order-update-whatsapp",
            defaults={
                "channel": "whatsapp",
                "body": "Hello {{ name }}, your order is on its way.",
                "content_sid": "HX" + "0" * 31 + "1",
                "content_variables": {"1": "name"},
            },
        )
        if not Segment.objects.filter(name="Adults in Nairobi").exists():
            campaign_services.segment_create(name="Adults in Nairobi", query='age >= 18 AND city = "Nairobi"')
        if not Campaign.objects.filter(name="Demo welcome").exists():
            campaign_services.campaign_create(
                name="Demo welcome",
                template=welcome,
                sender=sms,
                segment=Segment.objects.get(name="Adults in Nairobi"),
                actor="setup_demo",
            )
        # A few transactional sends so the simulated provider has statuses to play out;
        # the idempotency keys make a second `make run` send nothing new.
        for contact in Contact.objects.filter(consent_status=ConsentStatus.OPTED_IN).order_by("pk")[:10]:
            try:
                message_create(contact=contact, template=welcome, sender=sms, idempotency_key=f"demo-{contact.pk}")
            except MessageRequestError:  # an imported contact without a name: the template cannot greet it
                continue
        self.stdout.write(f"  demo senders: {sms.name}, {whatsapp.name}; campaign 'Demo welcome' (draft)")
