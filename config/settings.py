"""One settings module for every environment; environment variables decide.

With no variables set the platform runs on its embedded default: PostgreSQL and
Redis started by ``config.embedded`` (their URLs are read from var/embedded.env),
the simulated messaging provider and DEBUG on. Production names its own servers,
secrets and Twilio credentials through the variables documented in the README.
"""

from __future__ import annotations

from email.utils import parseaddr
from pathlib import Path

from django.core.checks.security.base import (
    SECRET_KEY_INSECURE_PREFIX,
    SECRET_KEY_MIN_LENGTH,
    SECRET_KEY_MIN_UNIQUE_CHARACTERS,
)
from django.core.exceptions import ImproperlyConfigured

from config import api_settings
from config.database import database_settings
from config.env import Env, read_env_file
from config.logging import logging_config
from config.storage import default_storage

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = Env()
# URLs of the embedded servers, written by `python -m config.embedded` when it starts them.
_embedded = read_env_file(VAR_DIR / "embedded.env")

DEBUG = env.bool("DEBUG", default=True)


def _secret_key_strong(key: str) -> bool:
    return (
        len(key) >= SECRET_KEY_MIN_LENGTH
        and len(set(key)) >= SECRET_KEY_MIN_UNIQUE_CHARACTERS
        and not key.startswith(SECRET_KEY_INSECURE_PREFIX)
    )


SECRET_KEY = env.str("SECRET_KEY")
if SECRET_KEY is None:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is false")
    SECRET_KEY = "insecure-development-key-used-only-when-DEBUG-is-on-and-no-SECRET_KEY-is-set"
elif not DEBUG and not _secret_key_strong(SECRET_KEY):
    # The rule of `check --deploy` (security.W009), so a key that starts also passes it.
    raise ImproperlyConfigured(
        f"SECRET_KEY must be at least {SECRET_KEY_MIN_LENGTH} characters long, with at least "
        f"{SECRET_KEY_MIN_UNIQUE_CHARACTERS} different ones and not starting with {SECRET_KEY_INSECURE_PREFIX!r}, "
        f"when DEBUG is false (this one has {len(SECRET_KEY)} characters); "
        "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(50))'"
    )

# Keys the phone hashes kept after an erasure (suppression list, consent audit): without it they
# could be reversed by hashing every possible number. Never change it once data exists: stored
# hashes can no longer be matched (they cannot be recomputed without the phones).
PHONE_HASH_KEY = env.str("PHONE_HASH_KEY")
if PHONE_HASH_KEY is None:
    if not DEBUG:
        raise ImproperlyConfigured(
            "PHONE_HASH_KEY must be set when DEBUG is false: a secret of 32+ characters that keys the phone hashes "
            "kept after erasure (make one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
    PHONE_HASH_KEY = "insecure-development-phone-hash-key-used-only-when-DEBUG-is-on"
elif len(PHONE_HASH_KEY) < 32 and not DEBUG:
    raise ImproperlyConfigured("PHONE_HASH_KEY must be at least 32 characters long")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is false")

# --- Databases -----------------------------------------------------------------------------

DATABASE_URL = env.url("DATABASE_URL", schemes=("postgres", "postgresql", "pgsql"))
if DATABASE_URL is None:
    DATABASE_URL = _embedded.get("DATABASE_URL")
if DATABASE_URL is None:
    raise ImproperlyConfigured(
        "DATABASE_URL is not set and the embedded PostgreSQL is not running; "
        "start the platform with `make run`, or wrap a command with `python -m config.embedded -- COMMAND`"
    )
# Between the platform and PostgreSQL (docs/operations.md gives the connection arithmetic):
# - none: each process holds its own persistent connections (DB_CONN_MAX_AGE);
# - pgbouncer: a pooler in transaction mode (PgBouncer, or any like it) at DATABASE_URL's host;
# - django: Django's own psycopg pool in each process (DATABASE_POOL_MIN_SIZE..MAX_SIZE).
DATABASE_POOLER = env.choice("DATABASE_POOLER", ("none", "pgbouncer", "django"), default="none")
# The webhook path prepares its one statement per connection (messaging.services.status); PgBouncer
# before 1.21 (Debian 12 ships 1.18) cannot carry prepared statements in transaction mode.
DATABASE_PREPARED_STATEMENTS = env.bool("DATABASE_PREPARED_STATEMENTS", default=DATABASE_POOLER != "pgbouncer")
DATABASES = {
    "default": database_settings(
        DATABASE_URL, env, pooler=DATABASE_POOLER, prepared_statements=DATABASE_PREPARED_STATEMENTS
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.url("REDIS_URL", schemes=("redis", "rediss", "unix")) or _embedded.get("REDIS_URL")
if REDIS_URL is None:
    raise ImproperlyConfigured(
        "REDIS_URL is not set and the embedded Redis is not running; "
        "start the platform with `make run`, or wrap a command with `python -m config.embedded -- COMMAND`"
    )


def _kombu_url(url: str) -> str:
    # redis-py spells a socket unix:///path; kombu's redis transport spells it redis+socket:///path.
    return "redis+socket://" + url[len("unix://") :] if url.startswith("unix://") else url


CELERY_BROKER_URL = _kombu_url(
    env.url("CELERY_BROKER_URL", schemes=("redis", "rediss", "unix", "redis+socket", "amqp")) or REDIS_URL
)

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "mp",
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}

# --- Messaging -----------------------------------------------------------------------------

MESSAGING_PROVIDER = env.choice("MESSAGING_PROVIDER", ("twilio", "simulated"), default="simulated")
TWILIO_ACCOUNT_SID = env.str("TWILIO_ACCOUNT_SID", "")
TWILIO_AUTH_TOKEN = env.str("TWILIO_AUTH_TOKEN", "")
TWILIO_API_BASE_URL = env.url("TWILIO_API_BASE_URL", schemes=("http", "https"))
if TWILIO_ACCOUNT_SID and not (TWILIO_ACCOUNT_SID.startswith("AC") and len(TWILIO_ACCOUNT_SID) == 34):
    raise ImproperlyConfigured("TWILIO_ACCOUNT_SID must be 34 characters starting with AC")
if MESSAGING_PROVIDER == "twilio" and not (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN):
    raise ImproperlyConfigured("MESSAGING_PROVIDER=twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
# Seconds: a failed connect means nothing was sent; past the read timeout the outcome is unknown.
TWILIO_CONNECT_TIMEOUT = env.float("TWILIO_CONNECT_TIMEOUT", 3.05, minimum=0.1)
TWILIO_READ_TIMEOUT = env.float("TWILIO_READ_TIMEOUT", 10.0, minimum=0.1)
# Requests in flight to the provider: as many as a sender's MPS x the observed latency needs,
# under these ceilings (per worker process, and per dispatcher of one sender). A 429 lowers them.
DELIVERY_MAX_IN_FLIGHT = env.int("DELIVERY_MAX_IN_FLIGHT", 512, minimum=1)
DELIVERY_MAX_IN_FLIGHT_PER_SENDER = env.int("DELIVERY_MAX_IN_FLIGHT_PER_SENDER", 400, minimum=1)
# Seconds between forced GIL switches in a process that sends (Python's default is 0.005).
DELIVERY_GIL_SWITCH_INTERVAL = env.float("DELIVERY_GIL_SWITCH_INTERVAL", 0.02, minimum=0.001)
# Seconds a provider call is assumed to take until one is measured (sizes the first requests in flight).
DELIVERY_LATENCY_GUESS = env.float("DELIVERY_LATENCY_GUESS", 0.5, minimum=0.001)
# Messages per second this deployment sustains for a sender without a limit (the dry run's estimate
# until completed runs have measured it).
DELIVERY_CAPACITY_MPS = env.float("DELIVERY_CAPACITY_MPS", 1200.0, minimum=1.0)
# Minutes after its send a message whose outcome is unknown (the provider could not be asked) is
# looked up again; past them it is failed, error code "unknown".
DELIVERY_UNKNOWN_GIVE_UP_MINUTES = env.int("DELIVERY_UNKNOWN_GIVE_UP_MINUTES", 60, minimum=1)
# Prices fetched from the provider after each message's final status (messaging.pricing.fetch):
# requests a second for them (every worker together; Twilio refuses too many at once with 429),
# messages per beat run, how long after the final status (Twilio fills the price in later), how
# long a message may stay "sent" (many never get a delivery receipt) before its price is asked
# anyway, and the tries before a message's price is given up.
PRICE_FETCH_RATE = env.float("PRICE_FETCH_RATE", 5.0, minimum=0.1)
PRICE_FETCH_BATCH = env.int("PRICE_FETCH_BATCH", 100, minimum=1)
PRICE_FETCH_DELAY_SECONDS = env.int("PRICE_FETCH_DELAY_SECONDS", 120, minimum=0)
PRICE_FETCH_SENT_AFTER_SECONDS = env.int("PRICE_FETCH_SENT_AFTER_SECONDS", 4 * 3600, minimum=0)
PRICE_FETCH_MAX_ATTEMPTS = env.int("PRICE_FETCH_MAX_ATTEMPTS", 6, minimum=1)
# A personalised body's cost estimate renders every recipient up to this many; past it, an evenly
# spread sample of about this many (messages per country stay exact).
COST_ESTIMATE_RENDER_MAX = env.int("COST_ESTIMATE_RENDER_MAX", 200_000, minimum=100)
PUBLIC_BASE_URL = (env.url("PUBLIC_BASE_URL", schemes=("http", "https")) or "http://127.0.0.1:8000").rstrip("/")
# The TwiML reply to HELP and INFO keywords.
HELP_REPLY_TEXT = env.str(
    "HELP_REPLY_TEXT",
    "Reply STOP to unsubscribe or START to subscribe again. Msg & data rates may apply.",
)

DEFAULT_TIMEZONE = env.timezone("DEFAULT_TIMEZONE", default="UTC")
# The country of phone numbers written without a country code (an import may choose another).
PHONE_DEFAULT_COUNTRY = env.country("PHONE_DEFAULT_COUNTRY")

# --- Django --------------------------------------------------------------------------------

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "import_export",
    "django_htmx",
    "audience",
    "messaging",
    "campaigns",
    "reporting",
    "config.apps.PlatformConfig",
]

MIDDLEWARE = [
    "config.middleware.RequestIdMiddleware",
    "config.middleware.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    # plotly.js for the analyst pages' charts, straight from the pinned plotly package.
    "reporting.staticfinders.PlotlyFinder",
]
# Uploaded import files: MEDIA_ROOT on this machine, or with S3_BUCKET an S3-compatible bucket that
# every web and worker node reads (AWS S3, MinIO, Ceph...): config/storage.py.
S3_BUCKET = env.str("S3_BUCKET", "")
S3_ENDPOINT_URL = env.url("S3_ENDPOINT_URL", schemes=("http", "https"))
STORAGES = {
    "default": default_storage(env, bucket=S3_BUCKET, endpoint_url=S3_ENDPOINT_URL),
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", str(VAR_DIR / "media")))
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 10_000

# --- Security ------------------------------------------------------------------------------

SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^health/$", r"^metrics$"]
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- REST API ------------------------------------------------------------------------------

REST_FRAMEWORK = api_settings.rest_framework_settings(env)  # throttle rates: API_THROTTLE_<SCOPE>_RATE
SPECTACULAR_SETTINGS = api_settings.SPECTACULAR_SETTINGS

# --- Celery --------------------------------------------------------------------------------

CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Countdowns are kept well below this, so the Redis transport never redelivers a waiting task.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Save each entry's last_run_at as soon as beat sends it (not every 3 minutes): the dashboard's
# "last beat tick" and the beat-stopped alert read it.
CELERY_BEAT_SYNC_EVERY = 1
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ALWAYS_EAGER = False

# --- Logging -------------------------------------------------------------------------------

LOG_LEVEL = env.choice("LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), default="INFO")
# One JSON object per line with the request id and task ids (config.logging); text for development.
LOG_FORMAT = env.choice("LOG_FORMAT", ("json", "text"), default="text" if DEBUG else "json")
LOGGING = logging_config(LOG_LEVEL, LOG_FORMAT)

# --- Metrics and alerts --------------------------------------------------------------------

# /metrics (Prometheus) answers a Bearer METRICS_TOKEN or a client address in METRICS_ALLOWED_IPS.
METRICS_TOKEN = env.str("METRICS_TOKEN", "")
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"] if DEBUG else [])
# Request counters are summed in Redis; each process flushes its own at most this often.
METRICS_FLUSH_SECONDS = env.float("METRICS_FLUSH_SECONDS", 1.0, minimum=0)
# Alerts are mailed to ADMINS ("Name <a@example.com>,b@example.com") and POSTed to ALERT_WEBHOOK_URL.
ADMINS = [parseaddr(item) for item in env.list("ADMINS", default=[])]
ALERT_WEBHOOK_URL = env.url("ALERT_WEBHOOK_URL", schemes=("http", "https")) or ""
EMAIL_HOST = env.str("EMAIL_HOST", "localhost")
EMAIL_PORT = env.int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = 10
SERVER_EMAIL = env.str("SERVER_EMAIL", "alerts@localhost")
EMAIL_SUBJECT_PREFIX = env.str("EMAIL_SUBJECT_PREFIX", "[messaging] ")

# --- Import / export -----------------------------------------------------------------------

# Resources escape formulas themselves (config.spreadsheet), more strictly than this setting would.
IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT = False
IMPORT_EXPORT_SKIP_ADMIN_LOG = True
# Exporting is reading: it needs the model's view permission (the library allows every staff user).
IMPORT_EXPORT_EXPORT_PERMISSION_CODE = "view"
# Admin imports up to this size run in the request (a second or so); bigger ones go to a Celery worker.
INGEST_INLINE_MAX_BYTES = env.int("INGEST_INLINE_MAX_BYTES", 1024 * 1024, minimum=0)
# Processes that validate an import file; 0 means one per available core.
INGEST_WORKERS = env.int("INGEST_WORKERS", 0, minimum=0)

# --- Hardening: retention, abuse protection, upload limits, security headers ---------------
# (one block so the settings stay together; env variables are documented in the README)

# Days raw provider payloads, inbound message bodies and import row problems are kept; 0 keeps
# them forever. The beat task messaging.retention_purge clears older ones in small batches.
RETENTION_WEBHOOK_PAYLOAD_DAYS = env.int("RETENTION_WEBHOOK_PAYLOAD_DAYS", 30, minimum=0)
RETENTION_INBOUND_BODY_DAYS = env.int("RETENTION_INBOUND_BODY_DAYS", 90, minimum=0)
RETENTION_IMPORT_ERRORS_DAYS = env.int("RETENTION_IMPORT_ERRORS_DAYS", 30, minimum=0)
# Uploaded import files (they hold phone numbers) are deleted this many days after their job ended.
RETENTION_IMPORT_FILES_DAYS = env.int("RETENTION_IMPORT_FILES_DAYS", 7, minimum=0)
# Events posted to the API older than this are deleted by campaigns.event_retention_purge (hourly);
# one a campaign answered stays with its recipient, its properties emptied. 0 keeps them forever.
RETENTION_EVENTS_DAYS = env.int("RETENTION_EVENTS_DAYS", 90, minimum=0)
RETENTION_BATCH_SIZE = env.int("RETENTION_BATCH_SIZE", 5000, minimum=1)

# Tracked links (docs/outcomes.md): URLs in message bodies become PUBLIC_BASE_URL/l/<code>; a code
# answers for RETENTION_LINK_DAYS (at least 1), then shows a plain page and its URL is blanked.
LINK_TRACKING = env.bool("LINK_TRACKING", True)
RETENTION_LINK_DAYS = env.int("RETENTION_LINK_DAYS", 90, minimum=1)

# Proxies of our own in front of the platform (load balancer, nginx...): the client's address is
# that many entries from the right of X-Forwarded-For (config.clients). 0: REMOTE_ADDR is the client.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", 0, minimum=0)

# Failed admin logins: django-axes locks an account for one client address after LOGIN_FAILURE_LIMIT
# failures, for LOGIN_LOCKOUT_MINUTES (429 with Retry-After and the message below). By username and
# address together: one person's mistyped passwords lock neither everyone behind their address nor
# the account for its owner elsewhere.
INSTALLED_APPS += ["axes", "csp"]
MIDDLEWARE += ["config.csp.CSPMiddleware", "axes.middleware.AxesMiddleware"]  # axes last
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
LOGIN_LOCKOUT_MINUTES = env.int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1)
AXES_COOLOFF_TIME = LOGIN_LOCKOUT_MINUTES / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_CLIENT_IP_CALLABLE = "config.clients.client_ip"
AXES_LOCKOUT_CALLABLE = "config.clients.login_lockout_response"
AXES_RESET_ON_SUCCESS = True
AXES_COOLOFF_MESSAGE = (
    f"Too many failed logins for this account from this address: locked for "
    f"{LOGIN_LOCKOUT_MINUTES} minutes. Try again later or ask an administrator."
)

# How long each process remembers an API token's user and roles (config/auth.py); 0: not at all.
API_TOKEN_CACHE_SECONDS = env.int("API_TOKEN_CACHE_SECONDS", 10, minimum=0)
# Uploads: an import file may be up to IMPORT_MAX_BYTES (bigger ones get 413 naming the limit);
# other request bodies (JSON, forms, webhooks) stay within Django's 2.5 MB.
IMPORT_MAX_BYTES = env.int("IMPORT_MAX_BYTES", 256 * 1024 * 1024, minimum=1024)
# A dry run where more than this share of the checked rows have errors asks staff to confirm again.
IMPORT_CONFIRM_ERROR_SHARE = env.float("IMPORT_CONFIRM_ERROR_SHARE", 0.2, minimum=0.0)
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# Contact attributes, at every door (API, admin, imports): how many, and how big (audience/attributes.py).
ATTRIBUTES_MAX_KEYS = env.int("ATTRIBUTES_MAX_KEYS", 100, minimum=1)
ATTRIBUTE_KEY_MAX_CHARS = env.int("ATTRIBUTE_KEY_MAX_CHARS", 64, minimum=1)
ATTRIBUTE_VALUE_MAX_CHARS = env.int("ATTRIBUTE_VALUE_MAX_CHARS", 2000, minimum=1)
ATTRIBUTES_MAX_BYTES = env.int("ATTRIBUTES_MAX_BYTES", 16384, minimum=2)
# Lists and objects nested deeper than this in any JSON from outside (API bodies and fields, admin
# forms, webhooks) are refused with a 400 or a form error (config/json_limits.py).
JSON_MAX_DEPTH = 64

# Content-Security-Policy (django-csp): no inline script or style anywhere, no framing.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}
