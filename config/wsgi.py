import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

from messaging.links.views import link_fast_path  # noqa: E402
from messaging.webhooks.wsgi import webhook_fast_path  # noqa: E402  (needs the apps loaded above)

application = link_fast_path(webhook_fast_path(application))
