from django.urls import re_path

from reporting.alerting import api

urlpatterns = [
    re_path(r"^monitoring/alerts/?$", api.AlertsView.as_view(), name="monitoring-alerts"),
]
