"""Following a short link: resolve the code (Redis first, then the database), count the click, answer 302.

A code resolves to ``(link id, url)``; Redis keeps that for an hour (never past the link's
expiry) so a click costs one round trip for the lookup and one ``XADD`` to the click stream
(``messaging.links.clicks`` drains it into the database in bulk). When Redis cannot be reached the
click is written to the database at once: a click is never dropped. Link-preview fetches (the
agents of WhatsApp, iMessage, Slack and the like) and HEAD requests follow the link but are not
counted. Nothing here logs the request: a code says nothing about the person, and stays out of
the logs too.
"""

from __future__ import annotations

import re
import time
import uuid

import redis
from django.db import connection
from django.utils import timezone

from config.observe import redis_client
from messaging.links.codes import code_parse

CACHE_PREFIX = "links:code:"
CACHE_SECONDS = 3600
STREAM = "links:clicks"
STREAM_MAX = 5_000_000  # approximate cap: a drain stopped for days must not fill Redis's memory
MISSING = "-"  # cached for a well-formed code with no live link, briefly

# Link-preview agents: they fetch the page to draw a card, nobody clicked. iMessage announces
# itself as facebookexternalhit/Twitterbot; HEAD requests are counted out separately.
PREVIEW_AGENTS = re.compile(
    r"whatsapp|facebookexternalhit|facebot|twitterbot|slackbot|slack-imgproxy|telegrambot|discordbot|"
    r"linkedinbot|skypeuripreview|applebot|iframely|embedly|googlebot|bingbot|redditbot|pinterest|"
    r"viber|snapchat|mastodon|bitlybot|preview",
    re.IGNORECASE,
)


def is_preview(method: str, user_agent: str) -> bool:
    return method == "HEAD" or bool(PREVIEW_AGENTS.search(user_agent or ""))


def _from_database(message_id: int, position: int) -> tuple[int, str, float] | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, url, expires_at FROM messaging_link WHERE message_id = %s AND position = %s",
            [message_id, position],
        )
        row = cursor.fetchone()
    if row is None or not row[1] or row[2] <= timezone.now():
        return None
    return row[0], row[1], row[2].timestamp()


def link_resolve(code: str, client: redis.Redis | None = None) -> tuple[int, str] | None:
    """(link id, url) of a live code; None for an unknown, forged or expired one."""
    parsed = code_parse(code)
    if parsed is None:
        return None
    client = client or redis_client()
    key = CACHE_PREFIX + code
    try:
        cached = client.get(key)
    except redis.RedisError:
        cached = None
    if cached is not None:
        if cached == MISSING.encode():
            return None
        link_id, _, url = cached.decode().partition(" ")
        return int(link_id), url
    found = _from_database(*parsed)
    try:
        if found is None:
            client.set(key, MISSING, ex=60)
        else:
            link_id, url, expires = found
            client.set(key, f"{link_id} {url}", ex=max(1, min(CACHE_SECONDS, int(expires - time.time()))))
    except redis.RedisError:
        pass
    return None if found is None else found[:2]


def click_record(link_id: int, client: redis.Redis | None = None) -> None:
    """Queue one click for the drain; written to the database at once when Redis is away."""
    key = uuid.uuid4()
    at_ms = int(time.time() * 1000)
    try:
        (client or redis_client()).xadd(
            STREAM, {"k": key.bytes, "l": link_id, "t": at_ms}, maxlen=STREAM_MAX, approximate=True
        )
    except redis.RedisError:
        from messaging.links.clicks import clicks_write

        clicks_write([(key, link_id, at_ms)])


def link_follow(code: str, method: str, user_agent: str) -> str | None:
    """Where ``code`` leads (the click counted unless it was a preview); None when it leads nowhere."""
    client = redis_client()
    found = link_resolve(code, client)
    if found is None:
        return None
    link_id, url = found
    if not is_preview(method, user_agent):
        click_record(link_id, client)
    return url
