"""What an erasure clears besides the contact row: the traces imports and the admin left of a person.

Called by ``audience.services.contact_erase`` only, inside its transaction. A person is looked
for by their phone in any spelling (the digits of its national number, whatever separators,
prefix or country code surround them), their e-mail address and their name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.files.storage import Storage, storages
from django.db import connection
from django.db.models import BooleanField, Q
from django.db.models.expressions import RawSQL

from audience.ingest import sql
from audience.models import Contact, ImportJob, ImportRowError, ImportStatus

ERASED = "[erased]"
# Separators a phone may be written with; removed before looking for its digits.
PHONE_SEPARATORS = " .-()/\t"
FILE_BLOCK = 1 << 20
# Jobs whose file is no longer read: a running or queued job still needs its file.
FILE_DONE_STATUSES = (ImportStatus.SUCCEEDED, ImportStatus.FAILED, ImportStatus.PENDING)


@dataclass(frozen=True)
class Person:
    """The values that identify a contact in free text."""

    national_digits: str
    country_code: str
    email: str
    name: str

    @classmethod
    def of(cls, contact: Contact) -> Person:
        number = phonenumbers.parse(contact.phone)
        return cls(
            national_digits=phonenumbers.national_significant_number(number),
            country_code=str(number.country_code),
            email=(contact.email or "").strip().lower(),
            name=(contact.name or "").strip(),
        )

    def phone_pattern(self) -> re.Pattern:
        """The phone in any spelling: +CC, 00CC, CC or a trunk 0 first; any separators between digits."""
        gap = f"[{re.escape(PHONE_SEPARATORS)}]*"
        national = gap.join(self.national_digits)
        cc = gap.join(self.country_code)
        return re.compile(rf"(?:(?:\+|%2[Bb]|00)?{gap}{cc}{gap}|0{gap})?\(?{national}")

    def scrub(self, text: str) -> str:
        """``text`` with this person's phone, e-mail address and name replaced by [erased]."""
        if not text:
            return text
        text = self.phone_pattern().sub(ERASED, text)
        for value in (self.email, self.name):
            if value:
                text = re.sub(re.escape(value), ERASED, text, flags=re.IGNORECASE)
        return text

    def scrub_json(self, value):
        """``scrub`` applied to every string (keys too) of a JSON value."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub(key): self.scrub_json(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.scrub_json(item) for item in value]
        return value

    def found_in(self, *columns: str) -> RawSQL:
        """A filter true for rows whose ``columns`` (SQL text expressions) may hold this person."""
        clauses, params = [], []
        for column in columns:
            clauses.append(f"regexp_replace({column}, '[^0-9]', '', 'g') LIKE %s")
            params.append(f"%{self.national_digits}%")
            for value in (self.email, self.name):
                if value:
                    clauses.append(f"strpos(lower({column}), %s) > 0")
                    params.append(value.lower())
        return RawSQL(" OR ".join(clauses), params, output_field=BooleanField())


def contact_traces_erase(contact: Contact) -> None:
    person = Person.of(contact)
    _import_problems_erase(contact, person)
    _import_jobs_erase(person)
    _import_stages_drop()
    _admin_log_erase(contact, person)


def _import_problems_erase(contact: Contact, person: Person) -> None:
    """Blank the cells of row problems that hold the person, and of every problem on their lines."""
    lines = Q()
    for evidence in contact.consent_events.filter(evidence__has_key="import_job").values_list("evidence", flat=True):
        lines |= Q(job_id=evidence["import_job"], line=evidence.get("line"))
    if lines:
        ImportRowError.objects.filter(lines).exclude(value="").update(value="")
    ImportRowError.objects.filter(person.found_in('"audience_importrowerror"."value"')).update(value="")
    for problem in ImportRowError.objects.filter(person.found_in('"audience_importrowerror"."reason"')).only("reason"):
        ImportRowError.objects.filter(pk=problem.pk).update(reason=person.scrub(problem.reason))


def _import_jobs_erase(person: Person) -> None:
    """Scrub the person from jobs' texts, and delete the uploaded files that hold their phone."""
    texts = person.found_in(*(f"audience_importjob.{column}" for column in ("file_name", "details::text", "error")))
    for job in ImportJob.objects.filter(texts).only("file_name", "details", "error"):
        ImportJob.objects.filter(pk=job.pk).update(
            file_name=person.scrub(job.file_name), error=person.scrub(job.error), details=person.scrub_json(job.details)
        )
    storage = storages["default"]  # where uploads are kept (audience.ingest.files.import_storage)
    uploads = ImportJob.objects.filter(status__in=FILE_DONE_STATUSES, file_path__startswith="imports/")
    for job_id, relative in uploads.values_list("pk", "file_path"):
        if _file_holds(storage, relative, person):
            ImportJob.objects.filter(pk=job_id).update(file_path="")
            storage.delete(relative)


def _import_stages_drop() -> None:
    """Drop staging tables a crashed import left behind (a running or queued job's stays: it is in use)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename ~ %s",
            [f"^{sql.STAGE_PREFIX}[0-9]+$"],
        )
        stages = {int(name.removeprefix(sql.STAGE_PREFIX)): name for (name,) in cursor.fetchall()}
        busy = set(
            ImportJob.objects.filter(pk__in=stages, status__in=[ImportStatus.RUNNING, ImportStatus.QUEUED]).values_list(
                "pk", flat=True
            )
        )
        for job_id, name in stages.items():
            if job_id not in busy:
                cursor.execute(sql.drop_stage(name))


def _file_holds(storage: Storage, name: str, person: Person) -> bool:
    """Whether the file holds the person's phone (any separators) or e-mail address; read in blocks."""
    digits = person.national_digits.encode()
    email = person.email.encode()
    overlap = max(len(digits), len(email))
    carry_digits = carry_text = b""
    try:
        with storage.open(name, "rb") as handle:
            while block := handle.read(FILE_BLOCK):
                bare = carry_digits + block.translate(None, PHONE_SEPARATORS.encode())
                text = carry_text + block.lower()
                if digits in bare or (email and email in text):
                    return True
                carry_digits, carry_text = bare[-overlap:], text[-overlap:]
    except FileNotFoundError:
        return False
    return False


def _admin_log_erase(contact: Contact, person: Person) -> None:
    """The admin's history names objects as they were shown; the contact's entries and any naming them go."""
    contact_type = ContentType.objects.get_for_model(Contact)
    LogEntry.objects.filter(content_type=contact_type, object_id=str(contact.pk)).update(
        object_repr=f"contact #{contact.pk} (erased)"
    )
    entries = LogEntry.objects.filter(
        person.found_in('"django_admin_log"."object_repr"', '"django_admin_log"."change_message"')
    )
    for entry in entries.only("object_repr", "change_message"):
        LogEntry.objects.filter(pk=entry.pk).update(
            object_repr=person.scrub(entry.object_repr), change_message=person.scrub(entry.change_message)
        )
