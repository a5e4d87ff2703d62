"""Finding and aborting multipart uploads that no load will ever complete.

A load writes its partition through an invisible multipart upload and aborts it on any failure
it lives to see. A worker killed outright (SIGKILL, a lost container, an endpoint gone before
the abort) leaves the upload behind: never visible to readers, but billed as storage until it
is aborted. `abort_stale_uploads` aborts those older than the longest a run may live; the
bucket lifecycle rule in the README does the same on S3's side.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_MIN_AGE = dt.timedelta(hours=6)
"""Run monitoring ends any run after 6 hours (`dagster.yaml`): an older upload is orphaned."""


class UploadListingClient(Protocol):
    """The subset of a boto3 S3 client used here."""

    def list_multipart_uploads(self, **kwargs: Any) -> Mapping[str, Any]:
        """ListMultipartUploads."""
        ...

    def abort_multipart_upload(self, **kwargs: Any) -> Mapping[str, Any]:
        """AbortMultipartUpload."""
        ...


@dataclass(frozen=True)
class IncompleteUpload:
    """A multipart upload that was started and neither completed nor aborted."""

    key: str
    upload_id: str
    initiated: dt.datetime


def incomplete_uploads(
    client: UploadListingClient, bucket: str, prefix: str = ""
) -> list[IncompleteUpload]:
    """Every incomplete multipart upload under `prefix`, oldest first."""
    found: list[IncompleteUpload] = []
    request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        page = client.list_multipart_uploads(**request)
        found += [
            IncompleteUpload(str(u["Key"]), str(u["UploadId"]), u["Initiated"])
            for u in page.get("Uploads", [])
        ]
        if not page.get("IsTruncated"):
            break
        request["KeyMarker"] = page["NextKeyMarker"]
        request["UploadIdMarker"] = page["NextUploadIdMarker"]
    return sorted(found, key=lambda u: u.initiated)


def abort_stale_uploads(
    client: UploadListingClient,
    bucket: str,
    prefix: str = "",
    *,
    min_age: dt.timedelta = DEFAULT_MIN_AGE,
    now: dt.datetime | None = None,
    dry_run: bool = False,
) -> list[IncompleteUpload]:
    """Abort the incomplete uploads under `prefix` started at least `min_age` ago.

    Younger ones may belong to a load still running, and are left alone. Returns what was
    aborted (or, with `dry_run`, what would be).
    """
    cutoff = (now or dt.datetime.now(dt.UTC)) - min_age
    stale = [u for u in incomplete_uploads(client, bucket, prefix) if u.initiated <= cutoff]
    if not dry_run:
        for upload in stale:
            client.abort_multipart_upload(Bucket=bucket, Key=upload.key, UploadId=upload.upload_id)
    return stale
