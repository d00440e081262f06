"""Alerting: rules (editable in the admin), their state per subject, and the history of alerts.

``services.alerts_evaluate`` runs every 30 s from celery-beat; each rule's probe (``probes``)
measures a value per subject (a queue, a sender, a run, or the platform), and the rule's state
for that subject moves between ok and firing by conditional UPDATEs, so two evaluators never
both fire. Each transition is one ``AlertNotice`` row, delivered after commit by a Celery task
to the admins by email and, when ALERT_WEBHOOK_URL is set, as a Slack-compatible JSON POST.
"""
