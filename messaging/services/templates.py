"""Template validation, rendering and previews: one path for the admin, the API and the send service."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from audience.models import Channel, Contact
from messaging.links.rewrite import body_as_sent
from messaging.models import MessageTemplate
from messaging.rendering import (
    RenderResult,
    Segments,
    contact_lookup,
    content_variable_name,
    is_known_name,
    placeholder_names,
    render_content_variables,
    render_text,
    sample_lookup,
    sms_segments,
    unknown_names,
)

CONTENT_SID_RE = re.compile(r"^HX[0-9a-fA-F]{32}$")
TEMPLATE_FIELDS = ("name", "channel", "locale", "body", "fallbacks", "content_sid", "content_variables")
KNOWN_HINT = "use a contact field (name, email, phone, locale, channel, timezone), attributes.<key> or event.<key>"


def template_validate(
    *,
    channel: str,
    body: str = "",
    fallbacks: Mapping[str, Any] | None = None,
    content_sid: str = "",
    content_variables: Mapping[str, Any] | None = None,
) -> None:
    """Raise a ValidationError keyed by field when the template could not render correctly."""
    errors: dict[str, list[str]] = {}
    unknown = unknown_names(placeholder_names(body))
    if unknown:
        errors["body"] = [f"unknown placeholder(s): {', '.join(unknown)}; {KNOWN_HINT}"]
    fallback_errors = _fallback_errors(fallbacks)
    if fallback_errors:
        errors["fallbacks"] = fallback_errors
    content_errors = _content_errors(channel, content_sid, content_variables)
    errors.update(content_errors)
    if not body.strip() and not content_sid:
        errors.setdefault("body", []).append("a template needs a body (or, for WhatsApp, a Content SID)")
    if errors:
        raise ValidationError(errors)


def _fallback_errors(fallbacks: Any) -> list[str]:
    if fallbacks in (None, ""):
        return []
    if not isinstance(fallbacks, Mapping):
        return ['fallbacks must be a JSON object such as {"name": "there"}']
    problems = []
    unknown = [name for name in fallbacks if not is_known_name(str(name))]
    if unknown:
        problems.append(f"unknown placeholder(s) in fallbacks: {', '.join(map(str, unknown))}")
    not_text = [str(name) for name, value in fallbacks.items() if not isinstance(value, str | int | float)]
    if not_text:
        problems.append(f"fallback values must be text or numbers: {', '.join(not_text)}")
    return problems


def _content_errors(channel: str, content_sid: str, mapping: Any) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if content_sid and channel != Channel.WHATSAPP:
        errors["content_sid"] = ["a Content SID is for WhatsApp templates only"]
    elif content_sid and not CONTENT_SID_RE.match(content_sid):
        errors["content_sid"] = ["a Content SID is HX followed by 32 hexadecimal characters"]
    if mapping in (None, "", {}):
        return errors
    if not content_sid:
        errors["content_variables"] = ["content variables need a Content SID"]
        return errors
    if not isinstance(mapping, Mapping):
        errors["content_variables"] = ['content variables must be a JSON object such as {"1": "name"}']
        return errors
    problems = []
    bad_keys = [str(key) for key in mapping if not (str(key).isdigit() and int(key) >= 1)]
    if bad_keys:
        problems.append(f"variable numbers must be 1, 2, 3...: {', '.join(bad_keys)}")
    names = [content_variable_name(str(value)) for value in mapping.values()]
    unknown = [name for name in names if not is_known_name(name)]
    if unknown:
        problems.append(f"unknown placeholder(s): {', '.join(unknown)}; {KNOWN_HINT}")
    if problems:
        errors["content_variables"] = problems
    return errors


def _template_values(template: MessageTemplate | None, data: Mapping[str, Any]) -> dict[str, Any]:
    values = {name: getattr(template, name) for name in TEMPLATE_FIELDS} if template else {}
    values.update({name: data[name] for name in TEMPLATE_FIELDS if name in data})
    return values


def template_validate_instance(template: MessageTemplate) -> None:
    values = _template_values(template, {})
    template_validate(
        channel=values["channel"],
        body=values["body"] or "",
        fallbacks=values["fallbacks"],
        content_sid=values["content_sid"] or "",
        content_variables=values["content_variables"],
    )


@transaction.atomic
def template_create(**data: Any) -> MessageTemplate:
    template = MessageTemplate(**{name: data[name] for name in TEMPLATE_FIELDS if name in data})
    template_validate_instance(template)
    template.full_clean()
    template.save()
    return template


@transaction.atomic
def template_update(template: MessageTemplate, *, data: Mapping[str, Any]) -> MessageTemplate:
    for name in TEMPLATE_FIELDS:
        if name in data:
            setattr(template, name, data[name])
    template_validate_instance(template)
    template.full_clean()
    template.save()
    return template


# --- Rendering -----------------------------------------------------------------------------


def template_render(
    template: MessageTemplate,
    *,
    contact: Contact | None = None,
    context: Mapping[str, Any] | None = None,
    sample: Mapping[str, Any] | None = None,
) -> RenderResult:
    """Render for a contact (plus event context) or for sample values; lists what is missing."""
    lookup = sample_lookup(sample) if sample is not None else contact_lookup(contact, context)
    fallbacks = template.fallbacks or {}
    text, missing = render_text(template.body, lookup, fallbacks)
    if template.content_sid:
        variables, missing = render_content_variables(template.content_variables or {}, lookup, fallbacks)
        return RenderResult(text=text, content_variables=variables, missing=missing)
    return RenderResult(text=text, missing=missing, segments=body_segments(template.channel, text))


def text_template(channel: str, body: str) -> MessageTemplate:
    """A free-text body as the (unsaved) template it renders exactly like: same placeholders, same
    renderer, same missing-variable rule; it has no fallbacks and no Content SID."""
    return MessageTemplate(channel=channel, body=body, fallbacks={})


def body_segments(channel: str, text: str) -> Segments | None:
    """SMS parts and encoding; None for WhatsApp, which has no segments."""
    return sms_segments(text) if channel == Channel.SMS else None


def template_preview(
    template: MessageTemplate,
    *,
    contact: Contact | None = None,
    sample: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What the admin and the API show: the text or content variables, what is missing, the SMS parts.

    The text is shown as written; its characters and SMS parts are counted as sent, with each
    tracked URL as its short link (``body_as_sent``).
    """
    result = template_render(template, contact=contact, sample=sample, context=context)
    sent = result.text if template.content_sid else body_as_sent(result.text)
    segments = body_segments(template.channel, sent) if result.segments else None
    return {
        "channel": template.channel,
        "text": result.text,
        "content_sid": template.content_sid,
        "content_variables": result.content_variables if template.content_sid else None,
        "missing_variables": result.missing,
        "skip_reason": result.skip_reason,
        "segments": segments.segments if segments else None,
        "encoding": segments.encoding if segments else None,
        "characters": len(sent),
    }
