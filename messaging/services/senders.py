"""Sender rules shared by the admin and the API."""

from __future__ import annotations

import re

from audience.models import Channel
from messaging.models import SenderKind

E164_RE = re.compile(r"^\+[1-9]\d{6,14}$")
MESSAGING_SERVICE_SID_RE = re.compile(r"^MG[0-9a-fA-F]{32}$")


def sender_errors(channel: str, kind: str, from_address: str, service_sid: str) -> dict[str, list[str]]:
    """What is wrong with a sender's channel, kind and addresses, by field (empty when fine)."""
    errors: dict[str, list[str]] = {}
    if not from_address and not service_sid:
        errors["from_address"] = ["give a from-address or a Messaging Service SID"]
    if service_sid and not MESSAGING_SERVICE_SID_RE.match(service_sid):
        errors["messaging_service_sid"] = ["a Messaging Service SID is MG followed by 32 hexadecimal characters"]
    if from_address:
        problem = _address_problem(channel, kind, from_address)
        if problem:
            errors["from_address"] = [problem]
    if channel and kind and (channel == Channel.WHATSAPP) != (kind == SenderKind.WHATSAPP):
        errors["kind"] = ["WhatsApp senders are of kind whatsapp, and only they are"]
    return errors


def _address_problem(channel: str, kind: str, address: str) -> str:
    whatsapp = address.lower().startswith("whatsapp:")
    number = address.split(":", 1)[1] if whatsapp else address
    if channel == Channel.WHATSAPP and not whatsapp:
        return "a WhatsApp sender's address is whatsapp:+E.164"
    if channel == Channel.SMS and whatsapp:
        return "an SMS sender's address has no whatsapp: prefix"
    if not E164_RE.match(number) and not (kind == SenderKind.SHORT_CODE and number.isdigit()):
        return "the number must be in E.164 form, e.g. +14155550100"
    return ""
