"""An import's file: kept in the default storage (shared by every node), read from a local path."""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import ClientError
from django.core.files.storage import Storage, storages

from audience.models import ImportJob

SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
COPY_BLOCK = 1 << 20


def import_storage() -> Storage:
    """Where uploaded import files are kept: the default storage, shared by every node."""
    return storages["default"]


@contextmanager
def upload_on_disk(upload) -> Iterator[str]:
    """A local path of an uploaded file: Django's temporary file, or a copy of a small in-memory one."""
    temporary = getattr(upload, "temporary_file_path", None)
    if temporary:
        yield temporary()
        return
    with tempfile.NamedTemporaryFile(prefix="import-upload-") as handle:
        upload.seek(0)
        for block in upload.chunks(COPY_BLOCK):
            handle.write(block)
        handle.flush()
        yield handle.name


def upload_still_here(upload) -> bool:
    """Whether the upload can still be read: the file system storage moves a big one's temporary file."""
    temporary = getattr(upload, "temporary_file_path", None)
    return temporary is None or os.path.exists(temporary())


def store_upload(upload) -> str:
    """Save an uploaded file to the storage under imports/; returns its name there."""
    name = SAFE_NAME.sub("_", os.path.basename(upload.name or "upload"))[-100:]
    upload.seek(0)
    return import_storage().save(f"imports/{uuid.uuid4().hex}-{name}", upload, max_length=500)


def _download(storage: Storage, name: str, handle) -> None:
    """Copy a stored file into ``handle``: an S3 bucket's object streamed by boto3, else in blocks."""
    bucket = getattr(storage, "bucket", None)
    if bucket is not None and hasattr(storage, "_normalize_name"):  # django-storages' S3Storage
        try:
            bucket.Object(storage._normalize_name(name)).download_fileobj(handle)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise FileNotFoundError(f"the stored file {name} is gone") from None
            raise
    else:
        with storage.open(name, "rb") as stored:
            while block := stored.read(COPY_BLOCK):
                handle.write(block)
    handle.flush()


@contextmanager
def job_file(job: ImportJob) -> Iterator[str]:
    """A local path of the job's file while the block runs; FileNotFoundError once it is gone.

    The command's own file (an absolute path) is read where it is, and so is an upload in a
    storage with local paths (the file system); from any other (a bucket) the file is copied to
    a temporary file of this machine (TMPDIR) first and deleted after.
    """
    if not job.file_path:
        raise FileNotFoundError("the uploaded file was removed")
    if os.path.isabs(job.file_path):
        yield job.file_path
        return
    storage = import_storage()
    try:
        local = storage.path(job.file_path)
    except NotImplementedError:
        local = None
    if local is not None:
        if not os.path.exists(local):
            raise FileNotFoundError(f"the stored file {job.file_path} is gone")
        yield local
        return
    suffix = os.path.splitext(job.file_path)[1][:10]
    with tempfile.NamedTemporaryFile(prefix=f"import-{job.pk}-", suffix=suffix) as handle:
        _download(storage, job.file_path, handle)
        yield handle.name
