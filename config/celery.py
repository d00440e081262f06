import os

from celery import Celery

from config.logging import celery_signals_connect

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(related_name="tasks_webhooks")
app.autodiscover_tasks(["reporting.alerting"])

# JSON logs with task ids in workers, and the publish time on every task (the oldest task's age).
celery_signals_connect()
