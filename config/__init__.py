import sys

# Every door (manage.py, gunicorn, celery -A config) imports this package first, so an interpreter below the
# supported range stops here with the reason instead of failing later on a missing name (enum.StrEnum, datetime.UTC).
# Keep this file's syntax plain: it must parse on old interpreters to say so.
MINIMUM_PYTHON = (3, 11)


def python_check(version_info=sys.version_info, executable=sys.executable):
    if tuple(version_info[:2]) < MINIMUM_PYTHON:
        raise SystemExit(
            "This platform needs Python {}.{} or newer (see README.md); {} is Python {}.{}.{}. "
            "Create the virtualenv with a newer interpreter, e.g. `make test PYTHON=python3.11`.".format(
                *MINIMUM_PYTHON, executable, *version_info[:3]
            )
        )


python_check()

from config.celery import app as celery_app  # noqa: E402  (after the check: celery needs a supported Python)

__all__ = ("celery_app",)
