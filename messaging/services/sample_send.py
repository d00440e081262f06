"""A test message ("Send test"): what a contact would get, sent to a number staff give, and counted nowhere.

No Message row is written and no status callback is asked for, so reports, counters, caps and the
contact's history never see it; the caller keeps the audit (a campaign records it as an action).
"""

from __future__ import annotations

from dataclasses import dataclass

from audience.models import Contact
from audience.phones import InvalidPhone, normalize_phone
from messaging.models import MessageTemplate, Sender
from messaging.providers import ProviderError, SendRequest, get_provider, provider_name_for
from messaging.services.create import MessageRequestError
from messaging.services.templates import template_render


@dataclass(frozen=True)
class SampleSent:
    to: str
    text: str
    provider_sid: str


def sample_message_send(*, template: MessageTemplate, contact: Contact, sender: Sender, to: str) -> SampleSent:
    """Render ``template`` for ``contact`` and send it to ``to`` through ``sender``. Raises MessageRequestError."""
    try:
        phone = normalize_phone(to)
    except InvalidPhone as exc:
        raise MessageRequestError({"to": [str(exc)]}) from None
    rendered = template_render(template, contact=contact)
    if not rendered.ok:
        missing = ", ".join(rendered.missing)
        raise MessageRequestError({"contact": [f"this contact has no value for {missing}: they would be skipped"]})
    request = SendRequest(
        to=phone,
        channel=sender.channel,
        from_=sender.from_address,
        messaging_service_sid=sender.messaging_service_sid,
        body="" if template.content_sid else rendered.text,
        content_sid=template.content_sid,
        content_variables=dict(rendered.content_variables),
        reference="test",
    )
    try:
        result = get_provider(provider_name_for(sender.provider)).send(request)
    except ProviderError as exc:
        raise MessageRequestError({"to": [f"the provider refused the test: {exc.message or exc.code}"]}) from None
    return SampleSent(to=phone, text=rendered.text, provider_sid=result.provider_sid)
