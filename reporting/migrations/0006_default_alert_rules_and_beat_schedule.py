"""Default alert rules (edit them in the admin) and the beat schedule that evaluates them."""

from django.db import migrations


# name: (kind, threshold, clear threshold, window minutes, clear after minutes, params, description)
RULES = {
    "Send failure rate": (
        "send_failure_rate",
        0.2,
        0.1,
        15,
        5,
        {"min_messages": 20},
        "More than 20 % of the outbound messages accepted or failed in the last 15 minutes failed "
        "(at least 20 of them); clears under 10 %.",
    ),
    "Queue depth": ("queue_depth", 5000, 1000, 5, 5, {"queues": ["celery"]}, "More than 5,000 tasks waiting."),
    "Queue oldest task": (
        "queue_oldest_task",
        10,
        None,
        5,
        5,
        {"queues": ["celery"]},
        "The oldest waiting task is over 10 minutes old.",
    ),
    "No Celery worker": ("no_workers", 1, None, 5, 2, {}, "No Celery worker answered a ping."),
    "celery-beat stopped": (
        "beat_stale",
        10,
        None,
        5,
        2,
        {},
        "celery-beat has not run a task for 10 minutes (it saves its ticks every 3 minutes).",
    ),
    "Webhook signature failures": (
        "webhook_signature_failures",
        50,
        None,
        5,
        10,
        {},
        "More than 50 webhooks refused (bad or missing signature) in 5 minutes.",
    ),
    "Campaign run stuck": (
        "run_stuck",
        15,
        None,
        5,
        5,
        {},
        "A running run with recipients to send took no batch for 15 minutes.",
    ),
    "Sender throttled": (
        "sender_throttled",
        10,
        None,
        10,
        10,
        {"error_codes": ["429", "20429", "63018"]},
        "A sender's messages got more than 10 rate-limit errors (429, 20429, WhatsApp 63018) in 10 minutes.",
    ),
}


def create_defaults(apps, schema_editor):
    AlertRule = apps.get_model("reporting", "AlertRule")
    for name, (kind, threshold, clear, window, hold, params, description) in RULES.items():
        AlertRule.objects.get_or_create(
            name=name,
            defaults={
                "kind": kind,
                "threshold": threshold,
                "clear_threshold": clear,
                "window_minutes": window,
                "clear_after_minutes": hold,
                "params": params,
                "description": description,
            },
        )


def delete_defaults(apps, schema_editor):
    apps.get_model("reporting", "AlertRule").objects.filter(name__in=RULES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("reporting", "0005_alert_rules_states_events"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_defaults, delete_defaults)]
