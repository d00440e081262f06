"""The analyst pages and their htmx partials, and the sign-in page they send visitors to."""

from django.contrib.auth import views as auth_views
from django.urls import path

from reporting import views

app_name = "reporting"

urlpatterns = [
    path("reporting/", views.DashboardPage.as_view(), name="dashboard"),
    path("reporting/monitoring/", views.MonitoringPage.as_view(), name="monitoring"),
    path("reporting/monitoring/inbound/", views.InboundPartial.as_view(), name="monitoring-inbound"),
    path("reporting/monitoring/status/", views.MonitoringStatusPartial.as_view(), name="monitoring-status"),
    path("reporting/campaigns/", views.CampaignListPage.as_view(), name="campaigns"),
    path("reporting/campaigns/<int:pk>/", views.CampaignAnalyticsPage.as_view(), name="campaign"),
]

# Django's default LOGIN_URL; the pages' own sign-in, for Analysts as well as Staff.
auth_urlpatterns = [
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(template_name="registration/login.html", next_page="reporting:dashboard"),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="login"), name="logout"),
]
