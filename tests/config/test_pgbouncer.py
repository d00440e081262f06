"""The platform behind PgBouncer in transaction mode (Debian's 1.18: no prepared statements across transactions).

Each test starts its own PgBouncer (``bench.pgbouncer``: transaction mode, a free port, clients
trusted) in front of the test database, then runs the webhook, send and import paths through it
with the settings DATABASE_POOLER=pgbouncer gives: no server-side prepared statements, no
server-side cursors. In transaction mode consecutive transactions of one client may run on
different server connections, and those of different clients on the same one.
"""

import os
import threading

import psycopg
import pytest
from django.db import connection, connections

from audience.models import Contact, ImportJob, ImportStatus
from bench import pgbouncer
from campaigns import services as campaign_services
from campaigns.models import CampaignRun, Recipient
from messaging.models import Message, MessageStatus, ProviderCallback
from tests import delivery
from tests.delivery import assert_counts_match_recount, campaign_with_audience, drain
from tests.ingest import ingest, write
from tests.nodes import database_url
from tests.twilio_webhooks import PUBLIC, STATUS_PATH, TOKEN, post_form, status_payload

fake = delivery.fake  # the fake Twilio server fixture
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(pgbouncer.binary() is None, reason="no pgbouncer program (apt-get install -y pgbouncer)"),
    pytest.mark.skipif(
        os.environ.get("EMBEDDED_DATABASE") == "1",
        reason="the embedded PostgreSQL takes no PgBouncer login; run with DATABASE_URL naming a server (CI does)",
    ),
]


@pytest.fixture
def bouncer():
    # Two server connections for every client: the clients' transactions must share them.
    with pgbouncer.PgBouncer(database_url(), pool_size=2) as running:
        yield running


@pytest.fixture
def through_bouncer(settings, bouncer):
    """Django's connections (every thread's) go through the pooler, with DATABASE_POOLER=pgbouncer's settings."""
    saved = {key: connection.settings_dict[key] for key in ("HOST", "PORT", "OPTIONS", "DISABLE_SERVER_SIDE_CURSORS")}
    connections.close_all()
    connection.settings_dict.update(
        HOST="127.0.0.1",
        PORT=bouncer.port,
        OPTIONS={**saved["OPTIONS"], "prepare_threshold": None},
        DISABLE_SERVER_SIDE_CURSORS=True,
    )
    settings.DATABASE_POOLER = "pgbouncer"
    settings.DATABASE_PREPARED_STATEMENTS = False
    yield bouncer
    connections.close_all()
    connection.settings_dict.update(saved)


def _transactions_through(bouncer, database: str) -> int:
    return sum(int(row["total_xact_count"]) for row in bouncer.show("STATS") if row["database"] == database)


def test_prepared_statements_of_two_clients_collide_in_transaction_mode(bouncer):
    """Why the setting exists: psycopg names its prepared statements per connection, PgBouncer 1.18 shares servers."""
    url = bouncer.url()
    with psycopg.connect(url, autocommit=True) as first, psycopg.connect(url, autocommit=True) as second:
        first.execute("SELECT %s::int", [1], prepare=True)
        with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
            second.execute("SELECT %s::int", [2], prepare=True)  # the same name, on the same server connection
        # Unprepared, both run whichever server connection they get.
        assert [
            conn.execute("SELECT %s::int", [n], prepare=False).fetchone()[0] for n, conn in ((3, first), (4, second))
        ]


def test_status_webhooks_from_several_connections_apply_through_the_pooler(client, settings, through_bouncer):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.PUBLIC_BASE_URL = PUBLIC
    database = connection.settings_dict["NAME"]
    before = _transactions_through(through_bouncer, database)
    sids = [f"SM{n:032d}" for n in range(12)]
    for sid in sids:
        Message.objects.create(channel="sms", provider_sid=sid, status=MessageStatus.QUEUED)
    answers: list[int] = []

    def post(sid: str, status: str) -> None:
        answers.append(post_form(client, STATUS_PATH, status_payload(sid, status)).status_code)

    # Callbacks from this thread and from others (each its own Django connection), interleaved.
    for index, sid in enumerate(sids):
        post(sid, "sent")
        other = threading.Thread(target=lambda s=sid: (post(s, "delivered"), connection.close()))
        other.start()
        other.join()
        if index % 3 == 0:
            post(sid, "delivered")  # a duplicate: stored once
    assert answers and set(answers) == {200}
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.DELIVERED}
    assert ProviderCallback.objects.count() == 2 * len(sids)
    assert _transactions_through(through_bouncer, database) > before + 2 * len(sids)


def test_a_campaign_run_sends_through_the_pooler_once_per_recipient(fake, through_bouncer):
    database = connection.settings_dict["NAME"]
    before = _transactions_through(through_bouncer, database)
    phones = [f"+2547180000{n:02d}" for n in range(30)]
    run = campaign_services.campaign_launch(campaign_with_audience(phones=phones, mps=500))
    drain(run)
    run = CampaignRun.objects.get(pk=run.pk)
    assert run.status == "completed" and run.sent == len(phones)
    assert [fake.requests_to(phone) for phone in phones] == [1] * len(phones)
    assert set(Recipient.objects.filter(run=run).values_list("state", flat=True)) == {"sent"}
    assert_counts_match_recount(run)
    assert _transactions_through(through_bouncer, database) > before + len(phones)


def test_an_import_with_its_validation_processes_goes_through_the_pooler(tmp_path, through_bouncer):
    database = connection.settings_dict["NAME"]
    before = _transactions_through(through_bouncer, database)
    lines = "".join(f"+2547190{n:05d},P{n},t{n % 4}\n" for n in range(3000))
    job = ingest(write(tmp_path, "pooled.csv", "phone,name,topics\n" + lines), workers=2)
    assert job.status == ImportStatus.SUCCEEDED, job.error
    assert job.created_count == 3000 == Contact.objects.count()
    assert ImportJob.objects.get(pk=job.pk).status == ImportStatus.SUCCEEDED
    # The server-side-cursor path (.iterator()) runs from a client-side cursor here.
    assert sum(1 for _ in Contact.objects.values_list("pk", flat=True).iterator(chunk_size=500)) == 3000
    clients = {row["database"]: row for row in through_bouncer.show("STATS")}
    assert _transactions_through(through_bouncer, database) > before + 8 and clients[database]["total_received"]
