"""Everything that knows Twilio: the client (``client``), its HTTP layer (``http``), its status
names and error codes (``codes``), and its signed webhooks (``webhooks``)."""

# Where Twilio posts status callbacks (messaging/webhooks/urls.py routes it).
STATUS_CALLBACK_PATH = "/webhooks/twilio/status/"
