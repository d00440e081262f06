"""URLs in a message's body become its short links; the links are saved before the message is claimed.

``body_track(message)`` runs right after rendering (``send.render_fill``, both send paths): each
``http(s)://`` URL of the rendered text, up to ``codes.MAX_LINKS``, is replaced by
``PUBLIC_BASE_URL/l/<code>`` and remembered on the message. A URL written ``notrack:https://...``
is left out: the marker is removed and the URL stays as it is. WhatsApp Content templates are
not rewritten (their text is approved as it is). ``links_save(messages)`` then writes the rows in
one statement, with the parameters (UTM...) the message's source asks for: the app that owns
the source registers a function (``link_params_register``), as campaigns does for recipients.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from functools import lru_cache
from urllib.parse import parse_qsl, quote

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.utils import timezone

from messaging.links.codes import MAX_LINKS, link_code
from messaging.models import Message

OPT_OUT = "notrack:"
URL_RE = re.compile(r"(?:notrack:)?https?://[^\s<>\"']+", re.IGNORECASE)
TRAILING = ".,;:!?'\""

ParamsFor = Callable[[list[int]], Mapping[int, Mapping[str, str]]]
_params: dict[tuple[str, str], ParamsFor] = {}  # (app label, model name) of a source -> its params


def link_params_register(model, params_for: ParamsFor) -> None:
    """``params_for(source ids)`` gives the query parameters each source's links get: {id: {name: value}}."""
    _params[(model._meta.app_label, model._meta.model_name)] = params_for


def short_url(code: str) -> str:
    return f"{settings.PUBLIC_BASE_URL}/l/{code}"


def _split_trailing(url: str) -> tuple[str, str]:
    """A sentence's full stop or a closing bracket after a URL is not part of it."""
    end = len(url)
    while end and (
        url[end - 1] in TRAILING or (url[end - 1] == ")" and url.count("(", 0, end) < url.count(")", 0, end))
    ):
        end -= 1
    return url[:end], url[end:]


def body_track(message: Message, text: str) -> str:
    """``text`` with its URLs replaced by the message's short links; ``message.tracked_urls`` lists them."""
    result, message.tracked_urls = links_rewrite(text, message.pk)
    return result


def links_rewrite(
    text: str, message_id: int | None, code: Callable[[int, int], str] = link_code
) -> tuple[str, list[str]]:
    """(``text`` as sent from message ``message_id``, the URLs its short links stand for).

    The one rule for what is tracked: the send (``body_track``) and every count made before
    the send (previews, cost estimates, through ``body_as_sent``) call it. With tracking off or
    no message id, only the ``notrack:`` markers go.
    """
    tracked: list[str] = []
    own = settings.PUBLIC_BASE_URL + "/l/"
    if not settings.LINK_TRACKING or message_id is None:
        return (URL_RE.sub(lambda match: match.group(0).removeprefix(OPT_OUT), text) if text else text), tracked

    def replace(match: re.Match) -> str:
        found = match.group(0)
        if found.lower().startswith(OPT_OUT):
            return found[len(OPT_OUT) :]
        url, after = _split_trailing(found)
        if url.startswith(own) or len(tracked) >= MAX_LINKS or len(url) < len("http://x"):
            return found
        tracked.append(url)
        return short_url(code(message_id, len(tracked) - 1)) + after

    return URL_RE.sub(replace, text or ""), tracked


def body_as_sent(text: str, message_id: int | None = None) -> str:
    """``text`` as a message would be sent, for counting its characters and SMS parts before it exists.

    The short links' length grows with the message id (``codes``): ``message_id`` is the highest
    id the messages counted will get, by default the next one (``message_id_next``).
    """
    if not text or "://" not in text or not URL_RE.search(text):
        return text
    if not settings.LINK_TRACKING:
        return links_rewrite(text, None)[0]
    return links_rewrite(text, message_id or message_id_next(), _code_counted)[0]


@lru_cache(maxsize=256)
def _code_cached(secret: str, message_id: int, position: int) -> str:
    return link_code(message_id, position)


def _code_counted(message_id: int, position: int) -> str:
    """The code an estimate counts, once per (id, position) and key: every body it counts shares the id."""
    return _code_cached(settings.SECRET_KEY, message_id, position)


def message_id_next() -> int:
    """The id the next message will get (the sequence is read, not advanced)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COALESCE(pg_sequence_last_value(pg_get_serial_sequence(%(table)s, 'id')), 0) + 1",
            {"table": Message._meta.db_table},
        )
        return int(cursor.fetchone()[0])


def url_with_params(url: str, params: Mapping[str, str]) -> str:
    """``url`` with each of ``params`` added unless the URL already has it (its own value is kept)."""
    if not params:
        return url
    base, hash_mark, fragment = url.partition("#")
    path, question, query = base.partition("?")
    present = {name for name, _ in parse_qsl(query, keep_blank_values=True)}
    added = [f"{quote(str(k), safe='')}={quote(str(v), safe='')}" for k, v in params.items() if k not in present]
    if not added:
        return url
    query = "&".join([part for part in [query] if part] + added)
    return f"{path}?{query}{hash_mark}{fragment}"


def _params_by_message(messages: list[Message]) -> dict[int, Mapping[str, str]]:
    by_type: dict[int, list[Message]] = defaultdict(list)
    for message in messages:
        if message.source_type_id and message.source_id:
            by_type[message.source_type_id].append(message)
    found: dict[int, Mapping[str, str]] = {}
    for type_id, group in by_type.items():
        kind = ContentType.objects.get_for_id(type_id)
        params_for = _params.get((kind.app_label, kind.model))
        if params_for is None:
            continue
        params = params_for(sorted({message.source_id for message in group}))
        for message in group:
            found[message.pk] = params.get(message.source_id) or {}
    return found


def links_save(messages: Iterable[Message]) -> int:
    """Write the links ``body_track`` found on ``messages`` (one statement); returns the rows written."""
    messages = [message for message in messages if getattr(message, "tracked_urls", None)]
    if not messages:
        return 0
    params = _params_by_message(messages)
    expires = timezone.now() + timedelta(days=settings.RETENTION_LINK_DAYS)
    ids, positions, urls = [], [], []
    for message in messages:
        for position, url in enumerate(message.tracked_urls):
            ids.append(message.pk)
            positions.append(position)
            urls.append(url_with_params(url, params.get(message.pk, {})))
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO messaging_link (message_id, position, url, expires_at)
            SELECT v.message_id, v.position, v.url, %(expires)s
            FROM unnest(%(ids)s::bigint[], %(positions)s::smallint[], %(urls)s::text[]) AS v(message_id, position, url)
            ON CONFLICT (message_id, position) DO UPDATE SET url = EXCLUDED.url
            WHERE messaging_link.url IS DISTINCT FROM EXCLUDED.url
            """,
            {"expires": expires, "ids": ids, "positions": positions, "urls": urls},
        )
        return cursor.rowcount
