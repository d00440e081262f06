"""What an import is told to do, besides its file: the job's options, read strictly once."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from audience.models import ImportJob


@dataclass(frozen=True)
class IngestOptions:
    default_consent: str | None = None  # None: rows of new contacts must give their consent
    topic: str = ""
    update_existing: bool = True
    default_country: str = ""  # of phone numbers written without a country code; "" for none

    @classmethod
    def from_job(cls, job: ImportJob) -> IngestOptions:
        options = job.options or {}
        return cls(
            default_consent=options.get("default_consent") or None,
            topic=options.get("topic", "") or "",
            update_existing=options.get("update_existing", True),
            default_country=options.get("default_country", settings.PHONE_DEFAULT_COUNTRY) or "",
        )
