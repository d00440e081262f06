"""config.sql's hot-path statements: a broken persistent connection, and rows of several tables read at once."""

from __future__ import annotations

import pytest
from django.db import DEFAULT_DB_ALIAS, OperationalError, connection, connections

from audience.models import Contact
from config import sql
from messaging.models import MessageTemplate, Sender
from tests.factories import ContactFactory, MessageTemplateFactory, SenderFactory


def _connection_killed() -> None:
    """The server ends this process's connection, as a restart or an idle timeout would."""
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    other = connections.create_connection(DEFAULT_DB_ALIAS)  # the same settings, a connection of its own
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()


@pytest.mark.django_db(transaction=True)
def test_a_statement_safe_to_repeat_is_sent_again_on_a_fresh_connection():
    _connection_killed()
    assert sql.fetch_one_prepared("SELECT %s::int + 1", [41]) == (42,)


@pytest.mark.django_db(transaction=True)
def test_a_statement_not_safe_to_repeat_is_never_sent_twice():
    sql.fetch_one_prepared("CREATE TABLE IF NOT EXISTS sql_once (n int)")
    try:
        _connection_killed()
        # A health check first: the dead connection is replaced before the INSERT, which runs once.
        connection.health_check_done = False
        sql.fetch_one_prepared("INSERT INTO sql_once VALUES (1)", retry=False)
        assert sql.fetch_one_prepared("SELECT count(*) FROM sql_once") == (1,)
        # Dead after a statement has just answered (no health check): raised, not retried.
        _connection_killed()
        with pytest.raises(OperationalError):
            sql.fetch_one_prepared("INSERT INTO sql_once VALUES (2)", retry=False)
        connection.close()
        assert sql.fetch_one_prepared("SELECT count(*) FROM sql_once") == (1,)
    finally:
        sql.fetch_one_prepared("DROP TABLE IF EXISTS sql_once")


@pytest.mark.django_db
def test_rows_of_several_tables_are_read_in_one_statement_as_model_instances(django_assert_num_queries):
    contact = ContactFactory(attributes={"plan": "gold"})
    template = MessageTemplateFactory(fallbacks={"name": "Friend"})
    sender = SenderFactory()
    with django_assert_num_queries(1):
        found = sql.instances_by_pk([(Contact, contact.pk), (MessageTemplate, template.pk), (Sender, sender.pk)])
    assert found == [contact, template, sender]
    assert found[0].attributes == {"plan": "gold"} and found[1].fallbacks == {"name": "Friend"}
    assert found[0].created_at == Contact.objects.get(pk=contact.pk).created_at
    assert not found[2]._state.adding and found[2]._state.db == "default"
    assert sql.instances_by_pk([(Contact, 10**12), (Sender, None), (MessageTemplate, template.pk)]) == [
        None,
        None,
        template,
    ]
