"""What a campaign will cost, before it is sent: per recipient, the rendered message's SMS segments
(GSM-7 or UCS-2, messaging.rendering; tracked URLs counted as their short links, as sent) times the
price for the destination country and channel (the price table, messaging.pricing.table).
A WhatsApp message is one unit whatever its length.

The dry run estimates over the contacts its snapshot would send to; a launched run is estimated
over its recipients once (``run_cost_estimate``, a task after the launch commits) and the summary
sets that against what the provider charged. Recipients whose country has no price are counted
and named, never priced at a guess; amounts in different currencies are kept apart, never added.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from decimal import Decimal
from types import SimpleNamespace

from django.conf import settings
from django.db import connection, transaction

from audience.models import Channel
from audience.phones import phone_country
from campaigns.models import Campaign, CampaignRun, RecipientState
from campaigns.services.arms import templates_by_arm
from campaigns.services.snapshot import Snapshot
from messaging.links.rewrite import body_as_sent, message_id_next
from messaging.models import MessageTemplate
from messaging.pricing.table import price_lookup
from messaging.rendering import contact_lookup, placeholder_names, render_text, sms_segments

logger = logging.getLogger(__name__)

CONTACT_COLUMNS = ("phone", "name", "email", "locale", "channel", "timezone", "attributes")
FETCH = 2000  # rows read at a time from the server-side cursor
SHOWN_COUNTRIES = 20  # the costliest countries listed; the totals count them all
UNKNOWN_COUNTRY = "unknown"
# Numbers sharing their first digits ("+254712", "+1212555") belong to one country: it is worked out
# once per prefix. Seven characters hold the area code of a shared calling code (+1, +44, +7).
PREFIX = 7


def _units(template: MessageTemplate, channel: str, last_id: int) -> tuple[int | None, bool]:
    """(units of every message, or None when each must be rendered; whether units are SMS segments)."""
    if channel != Channel.SMS:
        return 1, False  # WhatsApp is priced per message
    if template.content_sid:
        return max(sms_segments(template.body).segments, 1), True
    if not placeholder_names(template.body):
        return _segments(template.body, last_id), True
    return None, True


def _segments(text: str, last_id: int) -> int:
    """SMS parts of ``text`` as sent: its tracked URLs as short links as long as message ``last_id``'s."""
    return max(sms_segments(body_as_sent(text, last_id)).segments, 1)


def _rows(sql: str, params: list) -> Iterator[tuple]:
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(FETCH):
            yield from rows


def _estimate(template: MessageTemplate, channel: str, source: str, params: list) -> dict:
    """``source`` is SQL selecting the recipients' contacts as ``c``; returns the estimate (``cost_words`` reads it)."""
    return _priced(channel, *_counted(template, channel, source, params))


def _counted(template: MessageTemplate, channel: str, source: str, params: list) -> tuple[bool, dict, int]:
    """(whether units are SMS segments, {country: [messages, units]}, messages rendered) for ``source``.

    Messages per country are counted exactly, grouping the numbers by their first digits in SQL. A
    body the same for everyone is counted once; a personalised body is rendered for each recipient,
    or past COST_ESTIMATE_RENDER_MAX for a sample spread by a hash of the contact id, each
    country's segments per message then taken from its sampled messages.
    """
    country_of = _country_finder()
    messages: Counter[str] = Counter()
    grouped = f"SELECT min(c.phone), count(*) {source} GROUP BY left(c.phone, {PREFIX})"
    for phone, count in _rows(grouped, params):
        messages[country_of(phone)] += count
    total = sum(messages.values())
    last_id = message_id_next() + total  # the longest short links these messages can get
    fixed, segmented = _units(template, channel, last_id)
    if fixed is not None:
        return segmented, {country: [count, count * fixed] for country, count in messages.items()}, total
    every = max(1, math.ceil(total / settings.COST_ESTIMATE_RENDER_MAX))
    # hashint8 spreads the ids: a plain "id % k" would follow any period in the data (every 10th row alike).
    sampled = " AND (hashint8(c.id) & 2147483647) %% %s = 0" if every > 1 else ""
    fallbacks = template.fallbacks or {}
    rendered: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # country -> [messages, segments]
    for row in _rows(f"SELECT {_columns('c')} {source}{sampled}", [*params, *([every] if every > 1 else [])]):
        contact = SimpleNamespace(**dict(zip(CONTACT_COLUMNS, row, strict=True)))
        if isinstance(contact.attributes, str):  # jsonb comes back as its text through Django's connection
            contact.attributes = json.loads(contact.attributes)
        text, _missing = render_text(template.body, contact_lookup(contact), fallbacks)
        tally = rendered[country_of(row[0])]
        tally[0] += 1
        tally[1] += _segments(text, last_id)
    if every == 1:
        return segmented, dict(rendered), sum(n for n, _units in rendered.values())
    done = sum(n for n, _units in rendered.values())
    overall = sum(units for _n, units in rendered.values()) / done if done else 1.0
    by_country = {
        country: [
            count,
            round(count * (rendered[country][1] / rendered[country][0] if rendered[country][0] else overall)),
        ]
        for country, count in messages.items()
    }
    return segmented, by_country, done


def _estimate_arms(campaign: Campaign, source: str, params: list, arm_column: str) -> dict:
    """The estimate of a campaign's messages, each arm of an experiment with its own variant's template.

    ``source`` ends in a WHERE clause; ``arm_column`` names the recipients' arm in it. Recipients
    without an arm (no experiment, or held for a test's winner not picked yet) are counted with
    the campaign's own template; the control group is never sent, so never in ``source``. The
    arms' messages and units are added per country, then priced once.
    """
    templates = templates_by_arm(campaign)
    channel = campaign.sender.channel
    if len(templates) == 1:  # no experiment
        return _estimate(campaign.template, channel, source, params)
    by_country: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # country -> [messages, units]
    segmented, rendered = False, 0
    for arm, template in templates.items():
        if arm is None:
            counted = _counted(template, channel, f"{source} AND {arm_column} IS NULL", params)
        else:
            counted = _counted(template, channel, f"{source} AND {arm_column} = %s", [*params, arm])
        segmented, arm_counts, arm_rendered = counted
        rendered += arm_rendered
        for country, (messages, units) in arm_counts.items():
            by_country[country][0] += messages
            by_country[country][1] += units
    return _priced(channel, segmented, dict(by_country), rendered)


def _country_finder():
    countries: dict[str, str] = {}  # first digits -> country: one parse per area, not per contact

    def country_of(phone: str) -> str:
        prefix = phone[:PREFIX]
        if prefix not in countries:
            countries[prefix] = phone_country(phone) or UNKNOWN_COUNTRY
        return countries[prefix]

    return country_of


def _priced(channel: str, segmented: bool, by_country: dict, rendered: int) -> dict:
    prices = price_lookup(channel)
    totals: dict[str, list] = defaultdict(lambda: [Decimal(0), 0, 0])  # currency -> [amount, messages, units]
    countries, unpriced_messages, unpriced_countries = [], 0, []
    for country, (messages, units) in by_country.items():
        if country not in prices:
            unpriced_messages += messages
            unpriced_countries.append(country)
            continue
        unit_price, currency = prices[country]
        amount = unit_price * units
        total = totals[currency]
        total[0] += amount
        total[1] += messages
        total[2] += units
        countries.append(
            {
                "country": country,
                "messages": messages,
                "units": units,
                "unit_price": str(unit_price),
                "currency": currency,
                "amount": str(amount),
            }
        )
    countries.sort(key=lambda row: (row["currency"], -Decimal(row["amount"]), row["country"]))
    return {
        "channel": channel,
        "unit": "segment" if segmented else "message",
        "messages": sum(messages for messages, _units in by_country.values()),
        "units": sum(units for _messages, units in by_country.values()),
        "rendered": rendered,
        "totals": [
            {"currency": currency, "amount": str(amount), "messages": messages, "units": units}
            for currency, (amount, messages, units) in sorted(totals.items())
        ],
        "by_country": countries[:SHOWN_COUNTRIES],
        "unpriced": {"messages": unpriced_messages, "countries": sorted(unpriced_countries)},
    }


def _columns(alias: str) -> str:
    return ", ".join(f"{alias}.{column}" for column in CONTACT_COLUMNS)


def snapshot_cost_estimate(campaign: Campaign, snapshot: Snapshot) -> dict:
    """The cost of what a launch with this snapshot would send (its pending and held contacts)."""
    sql, params = snapshot.positional()
    source = f"""FROM ({sql}) s JOIN audience_contact c ON c.id = s.contact_id WHERE s.state IN (%s, %s)"""
    params += [RecipientState.PENDING, RecipientState.HELD]
    return _estimate_arms(campaign, source, params, "s.arm")


def run_cost_estimate(run_id: int) -> dict | None:
    """Estimate a launched run over its recipients not skipped at the snapshot, and keep it on the run.

    Safe to run twice: it writes the same figures (prices refreshed meanwhile aside).
    """
    run = CampaignRun.objects.select_related("campaign__template", "campaign__sender").filter(pk=run_id).first()
    if run is None:
        return None
    source = """FROM campaigns_recipient r JOIN audience_contact c ON c.id = r.contact_id
        WHERE r.run_id = %s AND NOT (r.state = %s AND r.message_id IS NULL)"""
    estimate = _estimate_arms(run.campaign, source, [run_id, RecipientState.SKIPPED], "r.arm")
    CampaignRun.objects.filter(pk=run_id).update(cost_estimate=estimate)
    logger.info("run %s: cost estimated over %s messages", run_id, estimate["messages"])
    return estimate


def run_cost_estimate_enqueue(run_id: int) -> None:
    """Estimate the run's cost in a worker once the launch has committed (its recipients are then visible)."""
    from campaigns.tasks import run_cost_estimate as task

    transaction.on_commit(lambda: task.delay(run_id), robust=True)


def money(amount: str | Decimal) -> str:
    """An amount as people read a bill: cents from 100 up, four decimals below (an SMS costs fractions of a cent)."""
    value = Decimal(amount)
    return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.4f}"


def cost_words(estimate: dict | None) -> str:
    """The estimate in one line: "12.90 USD for 100 messages (200 segments); 3 recipients have no price (XX)"."""
    if not estimate:
        return "not estimated"
    unit = estimate["unit"]
    parts = [
        f"{money(total['amount'])} {total['currency']} for {total['messages']} messages"
        + (f" ({total['units']} {unit}s)" if unit == "segment" else "")
        for total in estimate["totals"]
    ]
    text = " + ".join(parts) if parts else "nothing priced"
    if estimate.get("rendered", estimate["messages"]) < estimate["messages"] and unit == "segment":
        text += f" (segments from a sample of {estimate['rendered']} rendered messages)"
    if len(estimate["totals"]) > 1:
        text += " (different currencies, not added up)"
    unpriced = estimate["unpriced"]
    if unpriced["messages"]:
        text += (
            f"; {unpriced['messages']} recipients have no price"
            f" ({', '.join(unpriced['countries'])}: add them to the price table)"
        )
    return text
