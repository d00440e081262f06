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

import contextlib
import time
import uuid

import redis
from django.db import connection
from django.utils import timezone

from config.observe import redis_client
from messaging.links.codes import code_parse, link_code

CACHE_PREFIX = "links:code:"
CACHE_SECONDS = 3600
STREAM = "links:clicks"
STREAM_MAX = 5_000_000  # approximate cap: a drain stopped for days must not fill Redis's memory
MISSING = "-"  # cached for a well-formed code with no live link, briefly

# Link-preview agents: they fetch the page to draw a card, nobody clicked. iMessage announces
# itself as facebookexternalhit/Twitterbot; HEAD requests are counted out separately. Substrings
# of the lower-cased agent: cheaper than a regular expression on every click.
PREVIEW_AGENTS = (
    "whatsapp",
    "facebookexternalhit",
    "facebot",
    "twitterbot",
    "slackbot",
    "slack-imgproxy",
    "telegrambot",
    "discordbot",
    "linkedinbot",
    "skypeuripreview",
    "applebot",
    "iframely",
    "embedly",
    "googlebot",
    "bingbot",
    "redditbot",
    "pinterest",
    "viber",
    "snapchat",
    "mastodon",
    "bitlybot",
    "preview",
)


def is_preview(method: str, user_agent: str) -> bool:
    if method == "HEAD":
        return True
    agent = (user_agent or "").lower()
    return any(token in agent for token in PREVIEW_AGENTS)


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


def links_forget(links) -> int:
    """Blank these links' URLs (a queryset) and drop their cached codes; their clicks stay. Returns links blanked."""
    keys = [
        CACHE_PREFIX + link_code(message_id, position)
        for message_id, position in links.values_list("message_id", "position")
    ]
    done = links.update(url="")
    if keys:
        try:
            redis_client().delete(*keys)
        except redis.RedisError:
            pass  # cached for an hour at most
    return done


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


# One round trip for the common case: the cached code's link, and its click queued when it counts.
_FOLLOW_LUA = """
local found = redis.call('GET', KEYS[1])
if found and found ~= ARGV[1] and ARGV[2] == '1' then
    local link_id = string.match(found, '^(%d+) ')
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'k', ARGV[3], 'l', link_id, 't', ARGV[4])
end
return found
"""
_scripts: dict[int, object] = {}


def _follow_script(client: redis.Redis):
    script = _scripts.get(id(client))
    if script is None:
        script = _scripts[id(client)] = client.register_script(_FOLLOW_LUA)
    return script


def link_follow(code: str, method: str, user_agent: str, *, database=contextlib.nullcontext) -> str | None:
    """Where ``code`` leads (the click counted unless it was a preview); None when it leads nowhere.

    ``database()`` is entered around any use of the database (the WSGI path manages the
    connection there, as a Django request would); a cached code does not touch it.
    """
    parsed = code_parse(code)
    if parsed is None:
        return None
    counted = not is_preview(method, user_agent)
    client = redis_client()
    try:
        args = [MISSING, "1" if counted else "0", uuid.uuid4().bytes, int(time.time() * 1000), STREAM_MAX]
        cached = _follow_script(client)(keys=[CACHE_PREFIX + code, STREAM], args=args)
    except redis.RedisError:
        cached = None
    if cached is not None:  # the click, if it counts, is in the stream
        return None if cached == MISSING.encode() else cached.decode().partition(" ")[2]
    with database():
        found = link_resolve(code, client)
        if found is not None and counted:
            click_record(found[0], client)
    return None if found is None else found[1]
