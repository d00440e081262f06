from django.urls import path

from messaging.providers.twilio.webhooks import TwilioInboundView, TwilioStatusView

app_name = "webhooks"

urlpatterns = [
    path("twilio/status/", TwilioStatusView.as_view(), name="twilio-status"),
    path("twilio/inbound/", TwilioInboundView.as_view(), name="twilio-inbound"),
]
