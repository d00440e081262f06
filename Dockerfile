# Production image: gunicorn behind whitenoise for static files, running as a non-root user.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system app && useradd --system --gid app --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app

COPY requirements/ requirements/
RUN pip install -r requirements/prod.txt

COPY --chown=app:app . .

# collectstatic needs settings, not servers: placeholder URLs are enough at build time.
RUN DEBUG=false SECRET_KEY=build-only-secret-key-never-used-at-runtime-0123456789abcdef ALLOWED_HOSTS=build \
    PHONE_HASH_KEY=build-only-phone-hash-key-not-used-at-runtime-0 \
    DATABASE_URL=postgres://build@localhost/build REDIS_URL=redis://localhost:6379/0 \
    python manage.py collectstatic --noinput

# Production by default: the image refuses to start without SECRET_KEY, PHONE_HASH_KEY and ALLOWED_HOSTS.
ENV DEBUG=false

USER app
EXPOSE 8000
# GET /health/ as a host ALLOWED_HOSTS accepts (config/healthcheck.py says why).
HEALTHCHECK --interval=30s --timeout=5s --retries=3 CMD ["python", "config/healthcheck.py"]
# config.gunicorn_conf: access lines without query strings, every log line redacted of phones.
CMD ["gunicorn", "config.wsgi:application", "--config", "python:config.gunicorn_conf", "--bind", "0.0.0.0:8000", \
     "--workers", "4", "--threads", "2", "--access-logfile", "-", "--timeout", "30"]
