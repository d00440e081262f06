from django.urls import re_path

from reporting import api, api_arms

# Each path answers with or without its trailing slash, like the routers of the other apps.
urlpatterns = [
    re_path(r"^reporting/messages/status/?$", api.MessageStatusView.as_view(), name="reporting-message-status"),
    re_path(r"^reporting/messages/export/?$", api.MessageExportView.as_view(), name="reporting-message-export"),
    re_path(
        r"^reporting/campaigns/(?P<pk>\d+)/summary/?$",
        api.CampaignSummaryView.as_view(),
        name="reporting-campaign-summary",
    ),
    re_path(
        r"^reporting/campaigns/(?P<pk>\d+)/export/?$",
        api.CampaignExportView.as_view(),
        name="reporting-campaign-export",
    ),
    re_path(
        r"^reporting/campaigns/(?P<pk>\d+)/arms/?$", api_arms.CampaignArmsView.as_view(), name="reporting-campaign-arms"
    ),
    re_path(
        r"^reporting/campaigns/(?P<pk>\d+)/arms/export/?$",
        api_arms.CampaignArmsExportView.as_view(),
        name="reporting-campaign-arms-export",
    ),
    re_path(r"^monitoring/inbound/?$", api.InboundView.as_view(), name="monitoring-inbound"),
    re_path(r"^monitoring/dashboard/?$", api.DashboardView.as_view(), name="monitoring-dashboard"),
]
