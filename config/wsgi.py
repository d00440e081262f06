import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

from config.fast_path import FastPath  # noqa: E402  (needs the apps loaded above)
from messaging.links.views import link_fast_path  # noqa: E402

application = link_fast_path(FastPath(application))
