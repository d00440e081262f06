import os
import sys

from celery import Celery, signals

from config.logging import celery_signals_connect

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(related_name="tasks_webhooks")
app.autodiscover_tasks(["reporting.alerting"])

# JSON logs with task ids in workers, and the publish time on every task (the oldest task's age).
celery_signals_connect()

# Celery's Django fixup closes every database connection before and after each task, unless
# CELERY_DB_REUSE_MAX is set (then every that many tasks): without a pool, each task paid for a new
# PostgreSQL backend, whose first queries fill its caches and plan anew. Workers keep their
# connections as web requests do (DB_CONN_MAX_AGE): around each task, Django's
# close_old_connections drops only a connection past its age or left unusable, and has the next
# query check the connection's health (CONN_HEALTH_CHECKS).
app.conf.update(CELERY_DB_REUSE_MAX=sys.maxsize)


def _connections_close_old(sender=None, **_):
    if sender is not None and not getattr(sender.request, "is_eager", False):  # eager: the caller's connection
        from django.db import close_old_connections

        close_old_connections()


signals.task_prerun.connect(_connections_close_old, weak=False, dispatch_uid="config.celery.connections_prerun")
signals.task_postrun.connect(_connections_close_old, weak=False, dispatch_uid="config.celery.connections_postrun")
