"""Django's default storage for uploaded import files: MEDIA_ROOT on this machine, or with S3_BUCKET an
S3-compatible bucket (settings.py reads the bucket and endpoint; the keys and options are read here)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

from config.env import Env


def default_storage(env: Env, *, bucket: str, endpoint_url: str | None) -> dict[str, Any]:
    """Without S3 keys, boto3 finds credentials itself (AWS_* variables, an instance or task role)."""
    keys = (env.str("S3_ACCESS_KEY_ID"), env.str("S3_SECRET_ACCESS_KEY"))
    if any(keys) and not all(keys):
        raise ImproperlyConfigured("S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY go together: set both or neither")
    if not bucket:
        if endpoint_url or any(keys):
            raise ImproperlyConfigured("S3_ENDPOINT_URL and the S3 keys need S3_BUCKET, the bucket import files go to")
        return {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": endpoint_url,
            "access_key": keys[0],
            "secret_key": keys[1],
            "region_name": env.str("S3_REGION"),
            "location": env.str("S3_PREFIX", "").strip("/"),
            # A bucket behind an endpoint of its own (MinIO) is addressed by path, not by host name.
            "addressing_style": env.choice(
                "S3_ADDRESSING_STYLE", ("auto", "path", "virtual"), default="path" if endpoint_url else "auto"
            ),
            "default_acl": None,  # private: the bucket's own policy
            "file_overwrite": True,  # names are unique (a uuid): no existence check before each save
            "max_memory_size": 8 * 1024 * 1024,  # a file read through the storage spills to disk past this
        },
    }
