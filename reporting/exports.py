"""CSV exports streamed row by row from a server-side cursor; every cell escaped against formulas."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from django.db.models import QuerySet
from django.http import StreamingHttpResponse

from campaigns.models import Campaign, CampaignRun
from config.privacy import phone_shown
from config.spreadsheet import csv_download, escape_formula
from messaging.models import Message
from messaging.providers import error_meaning
from reporting.arms import arm_label, campaign_arm_labels
from reporting.selectors import campaign_result_rows

CHUNK_SIZE = 2000

CAMPAIGN_COLUMNS = [
    "run_id",
    "recipient_id",
    "contact_id",
    "phone",
    "state",
    "skip_reason",
    "detail",
    "message_id",
    "message_status",
    "error_code",
    "error_meaning",
    "error_message",
    "sent_at",
    "delivered_at",
    "read_at",
    "failed_at",
    "price",
    "price_unit",
    "clicks",
    "first_clicked_at",
    "conversions",
    "conversion_value",
    "arm",
]

MESSAGE_FIELDS = [
    "id",
    "direction",
    "channel",
    "contact_id",
    "sender_id",
    "to_address",
    "from_address",
    "status",
    "skip_reason",
    "provider_sid",
    "error_code",
    "error_message",
    "segments",
    "price",
    "price_unit",
    "created_at",
    "queued_at",
    "sent_at",
    "delivered_at",
    "read_at",
    "failed_at",
    "received_at",
]
MESSAGE_COLUMNS = [*MESSAGE_FIELDS[:12], "error_meaning", *MESSAGE_FIELDS[12:]]


def _cell(value):
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return escape_formula(value if isinstance(value, str) else str(value))


def _rows(header: list[str], rows: Iterable[Iterable]) -> Iterator[list]:
    yield header
    for row in rows:
        yield [_cell(value) for value in row]


def campaign_results_csv(campaign: Campaign, *, run: CampaignRun | None, full_phones: bool) -> StreamingHttpResponse:
    arm_labels = campaign_arm_labels(campaign)

    def rows():
        for row in campaign_result_rows(campaign, run=run):
            (run_id, rid, cid, phone, state, reason, detail, mid, status, code, text, *times, price, unit) = row[:17]
            outcomes, (arm, rollout) = row[17:21], row[21:23]  # clicks, first click, conversions, value; the arm
            failed = bool(code) or status in ("failed", "undelivered")
            meaning = error_meaning(code) if failed else ""
            shown = phone_shown(phone, full_phones)
            yield [
                run_id,
                rid,
                cid,
                shown,
                state,
                reason,
                detail,
                mid,
                status,
                code,
                meaning,
                text,
                *times,
                price,
                unit,
                *outcomes,
                arm_label(arm_labels, arm, rollout),
            ]

    suffix = f"-run-{run.pk}" if run else ""
    return csv_download(_rows(CAMPAIGN_COLUMNS, rows()), f"campaign-{campaign.pk}{suffix}-results.csv")


def messages_csv(queryset: QuerySet[Message], *, full_phones: bool) -> StreamingHttpResponse:
    to_index, from_index, code_index = MESSAGE_FIELDS.index("to_address"), MESSAGE_FIELDS.index("from_address"), 10

    def rows():
        values = queryset.order_by("-created_at", "-id").values_list(*MESSAGE_FIELDS)
        for row in values.iterator(chunk_size=CHUNK_SIZE):
            row = list(row)
            direction = row[1]
            # The contact's own number is the recipient of an outbound message, the sender of an inbound one.
            personal = to_index if direction == "outbound" else from_index
            row[personal] = phone_shown(row[personal], full_phones)
            code = row[code_index]
            yield [*row[:12], error_meaning(code) if code else "", *row[12:]]

    return csv_download(_rows(MESSAGE_COLUMNS, rows()), "messages.csv")
