"""Writes for campaigns: segments (validated in both syntaxes, one path for every door)."""

from __future__ import annotations

import dataclasses
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError

from audience.models import Topic
from campaigns.models import Segment
from campaigns.segments import query as query_language
from campaigns.segments import rules
from campaigns.segments.rules import Node, RuleError

# --- Segments --------------------------------------------------------------------------------


class SegmentError(ValidationError):
    """A segment write was refused. message_dict names the field; ``detail`` says where exactly:
    a query error's line, column and caret excerpt, or a definition error's path in the tree."""

    def __init__(self, field: str, message: str, *, shown: str | None = None, **detail: Any) -> None:
        super().__init__({field: [shown or message]})
        self.detail: dict[str, Any] = {"field": field, "message": message, **detail}


@dataclasses.dataclass(frozen=True)
class CleanDefinition:
    definition: dict[str, Any]  # canonical JSON tree
    query: str  # the query string it came from, or ""
    rule: Node


def segment_definition_clean(*, definition: Any = None, query: str | None = None) -> CleanDefinition:
    """Validate a rule given as a JSON tree or as a query string (exactly one of them).

    Topic names must exist: a typo in ``NOT topic = "vip"`` would otherwise match everyone.
    """
    has_query = bool(query and query.strip())
    if has_query and definition not in (None, "", {}):
        raise SegmentError("non_field_errors", "give either a definition or a query, not both")
    if has_query:
        return _clean_query(query)
    if definition in (None, ""):
        raise SegmentError("definition", "give a definition (a JSON rule tree) or a query string")
    try:
        rule = rules.validate(definition)
        _check_topics(definition)
    except RuleError as exc:
        raise SegmentError("definition", str(exc), path=exc.location) from None
    return CleanDefinition(rules.to_json(rule), "", rule)


def _clean_query(query: str) -> CleanDefinition:
    try:
        _, rule = query_language.parse_validated(query, check=_check_topics)
    except query_language.QueryError as exc:
        raise SegmentError(
            "query",
            exc.message,
            shown=str(exc),
            line=exc.line,
            column=exc.column,
            position=exc.position,
            excerpt=exc.excerpt,
        ) from None
    return CleanDefinition(rules.to_json(rule), query.strip(), rule)


def _check_topics(tree: dict[str, Any]) -> None:
    """Raise RuleError at the first topic name that does not exist (one query)."""
    wanted = list(_topic_values(tree, ""))
    if not wanted:
        return
    known = set(Topic.objects.filter(name__in={name for _, _, name in wanted}).values_list("name", flat=True))
    for path, key, name in wanted:
        if name not in known:
            raise RuleError(path, key, f"there is no topic named {name!r}")


def _topic_values(node: Any, path: str):
    for kind in ("all", "any"):
        if kind in node:
            for i, child in enumerate(node[kind]):
                yield from _topic_values(child, f"{path + '.' if path else ''}{kind}[{i}]")
            return
    if "not" in node:
        yield from _topic_values(node["not"], f"{path + '.' if path else ''}not")
    elif node.get("field") == "topic" and "value" in node:
        value = node["value"]
        if isinstance(value, list):
            yield from ((path, f"value[{i}]", name) for i, name in enumerate(value))
        else:
            yield path, "value", value


def segment_create(
    *,
    name: str,
    description: str = "",
    definition: Any = None,
    query: str | None = None,
    created_by=None,
) -> Segment:
    clean = segment_definition_clean(definition=definition, query=query)
    segment = Segment(
        name=(name or "").strip(),
        description=description or "",
        definition=clean.definition,
        query=clean.query,
        created_by=created_by if getattr(created_by, "pk", None) else None,
    )
    return _save(segment)


def segment_update(segment: Segment, *, data: dict[str, Any]) -> Segment:
    """Change name, description and/or the rule (``definition`` or ``query``, validated as on create).

    A new JSON definition clears the stored query string, which would no longer describe it.
    """
    if data.get("definition") is not None or data.get("query"):
        clean = segment_definition_clean(definition=data.get("definition"), query=data.get("query"))
        segment.definition, segment.query = clean.definition, clean.query
    if "name" in data:
        segment.name = (data["name"] or "").strip()
    if "description" in data:
        segment.description = data["description"] or ""
    return _save(segment)


def _save(segment: Segment) -> Segment:
    segment.full_clean()
    try:
        with transaction.atomic():
            segment.save()
    except IntegrityError:
        raise SegmentError("name", f"a segment named {segment.name!r} already exists") from None
    return segment


def segment_delete(segment: Segment) -> None:
    try:
        segment.delete()
    except ProtectedError:
        raise SegmentError("non_field_errors", "this segment is used by campaigns; change them first") from None
