from django.contrib import admin
from django.shortcuts import redirect
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from config.health import health
from messaging.links.views import link_redirect
from reporting.metrics import metrics_view
from reporting.urls_pages import auth_urlpatterns

api_v1 = [
    path("", include("audience.urls")),
    path("", include("messaging.urls")),
    path("", include("campaigns.urls")),
    path("", include("reporting.urls")),
    path("", include("reporting.alerting.urls")),  # /monitoring/alerts
]


# One product: the back office is named for the platform, and "View site" opens the dashboard,
# which answers what is sending now.
admin.site.site_header = "Messaging platform"
admin.site.site_title = "Messaging platform"
admin.site.index_title = "Back office"
admin.site.site_url = "/reporting/"


def favicon(request):
    """Pages without an icon link (error pages, the API docs) make browsers ask for /favicon.ico."""
    return redirect(static("favicon.svg"))


urlpatterns = [
    path("favicon.ico", favicon),
    path("", RedirectView.as_view(url="/reporting/", permanent=False)),
    path("health/", health, name="health"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its start-up script as a file, and the template has no inline style: CSP-clean.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="api_docs/swagger_ui.html"),
        name="api-docs",
    ),
    path("webhooks/", include("messaging.webhooks.urls")),
    path("l/<str:code>", link_redirect, name="link-redirect"),
    path("", include("reporting.urls_pages")),  # analyst pages under /reporting/
    path("", include(auth_urlpatterns)),  # /accounts/login/ and /accounts/logout/
]
