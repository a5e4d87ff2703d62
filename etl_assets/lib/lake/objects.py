"""Uploading one S3 object so that it appears at its key only when it is complete.

Streaming writers that target an S3 path directly publish whatever they wrote when they fail
(pyarrow and Polars both complete the multipart upload on close). Here the bytes go to an
upload that is invisible until `publish()` is called; `abort()` (or any failure before
`publish()`) leaves the key exactly as it was. A single object is replaced atomically by S3:
readers see the old version or the new one, never a mix.

The request that publishes (CompleteMultipartUpload, or PutObject for a small object) can fail
without saying whether S3 applied it: the reply was lost, the connection dropped, S3 answered
500 after completing. Every upload carries a token of its own in its user metadata
(`x-amz-meta-etl-assets-upload`), so such a failure is settled before anything is reported: the
multipart upload is aborted (after which it can no longer complete) and the key's metadata says
whether it holds this upload's object. `publish()` then returns the object, or raises
`NotPublishedError`; only when S3 cannot be reached to settle it does it raise
`PublishOutcomeUnknownError`, which says so.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from etl_assets.lib.errors import NotPublishedError, PublishOutcomeUnknownError

T = TypeVar("T")

MIB = 1024 * 1024
S3_MIN_PART_BYTES = 5 * MIB
S3_MAX_PARTS = 10_000

UPLOAD_METADATA = "etl-assets-upload"
"""User-metadata key of the token that tells this upload's object from any other version."""
SETTLE_ATTEMPTS = 4
"""Tries (each already retried by the client) to learn what a failed publish left at the key."""


class ServerSideEncryption(StrEnum):
    """The SSE mode every PUT carries."""

    S3 = "AES256"
    KMS = "aws:kms"


@dataclass(frozen=True)
class Encryption:
    """Server-side encryption settings applied to every object written."""

    mode: ServerSideEncryption = ServerSideEncryption.S3
    kms_key_id: str | None = None

    def __post_init__(self) -> None:
        if self.kms_key_id and self.mode is not ServerSideEncryption.KMS:
            raise ValueError("a KMS key id needs the aws:kms encryption mode")

    def request_args(self) -> dict[str, str]:
        """The PutObject / CreateMultipartUpload arguments for these settings."""
        args = {"ServerSideEncryption": self.mode.value}
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args


class S3Client(Protocol):
    """The subset of a boto3 S3 client used here."""

    def put_object(self, **kwargs: Any) -> Mapping[str, Any]:
        """PutObject."""
        ...

    def create_multipart_upload(self, **kwargs: Any) -> Mapping[str, Any]:
        """CreateMultipartUpload."""
        ...

    def upload_part(self, **kwargs: Any) -> Mapping[str, Any]:
        """UploadPart."""
        ...

    def complete_multipart_upload(self, **kwargs: Any) -> Mapping[str, Any]:
        """CompleteMultipartUpload."""
        ...

    def abort_multipart_upload(self, **kwargs: Any) -> Mapping[str, Any]:
        """AbortMultipartUpload."""
        ...

    def head_object(self, **kwargs: Any) -> Mapping[str, Any]:
        """HeadObject."""
        ...

    def delete_object(self, **kwargs: Any) -> Mapping[str, Any]:
        """DeleteObject."""
        ...


@dataclass(frozen=True)
class PublishedObject:
    """An object that is now visible at its key."""

    bucket: str
    key: str
    size: int
    etag: str
    version_id: str | None = None
    """The object's version, in a bucket with versioning on."""
    settled: str | None = None
    """Set when the publishing request failed but the key was found to hold this upload's
    object: what went wrong on the way (the object is published all the same)."""

    @property
    def uri(self) -> str:
        """`s3://bucket/key`."""
        return f"s3://{self.bucket}/{self.key}"


class PendingUpload(io.RawIOBase):
    """A writable, non-seekable file whose bytes become an S3 object only on `publish()`.

    Bytes are cut into parts of `part_size`; full parts upload on a background thread (at most
    `max_parts_in_flight` at once) while the caller keeps producing, so memory stays at a few
    parts whatever the object's size. An object smaller than one part is sent with a single
    PutObject at publish time. `metadata` becomes the object's user metadata, next to the
    upload's own token (`token`).
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        *,
        encryption: Encryption,
        content_type: str = "application/octet-stream",
        part_size: int = 8 * MIB,
        max_parts_in_flight: int = 2,
        metadata: Mapping[str, str] | None = None,
        settle_delay_seconds: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        if part_size < S3_MIN_PART_BYTES:
            raise ValueError(f"part_size must be at least {S3_MIN_PART_BYTES} bytes")
        self._client = client
        self.bucket = bucket
        self.key = key
        self.token = uuid.uuid4().hex
        """Written into the object's user metadata: how a HEAD tells this upload's object."""
        self._object_args = {
            "ContentType": content_type,
            "Metadata": {**(metadata or {}), UPLOAD_METADATA: self.token},
            **encryption.request_args(),
        }
        self._settle_delay = settle_delay_seconds
        self._sleep = sleep
        self._part_size = part_size
        self._buffer = bytearray()
        self._position = 0
        self._upload_id: str | None = None
        self._parts: list[Future[Mapping[str, Any]]] = []
        self._slots = threading.BoundedSemaphore(max_parts_in_flight)
        self._pool: ThreadPoolExecutor | None = None
        self._state = "open"
        self._acknowledged = 0
        self._acknowledged_lock = threading.Lock()
        self.abort_failure: str | None = None
        """Why aborting the multipart upload failed, if it did: the upload is left behind."""

    # io.RawIOBase protocol: pyarrow's ParquetWriter writes through these.
    def writable(self) -> bool:
        """Always: this file only takes writes."""
        return True

    def tell(self) -> int:
        """Bytes written so far (pyarrow asks for its position)."""
        return self._position

    def write(self, data: Any) -> int:  # noqa: D102 - io protocol
        if self._state != "open":
            raise ValueError(f"upload of s3://{self.bucket}/{self.key} is {self._state}")
        view = memoryview(data).cast("B")
        taken = 0
        while taken < len(view):
            # Fill the current part exactly; a full part is handed over whole, not copied.
            piece = view[taken : taken + self._part_size - len(self._buffer)]
            self._buffer += piece
            taken += len(piece)
            if len(self._buffer) >= self._part_size:
                full, self._buffer = self._buffer, bytearray()
                self._send_part(full)
        self._position += len(view)
        return len(view)

    def close(self) -> None:
        """Closing the file only stops writes; nothing becomes visible until `publish()`."""
        super().close()

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._position

    @property
    def uploaded(self) -> int:
        """Bytes of the parts S3 has acknowledged so far (all of them once published)."""
        if self._state == "published":
            return self._position
        return self._acknowledged

    @property
    def uri(self) -> str:
        """`s3://bucket/key`."""
        return f"s3://{self.bucket}/{self.key}"

    def publish(self) -> PublishedObject:
        """Make the object visible at its key, replacing any previous version atomically.

        If the publishing request fails, what it left at the key is settled first (see the
        module docstring): the object is returned if it is there, else `NotPublishedError`
        (or `PublishOutcomeUnknownError`) is raised from the failure.
        """
        if self._state != "open":
            raise ValueError(f"upload of {self.uri} is {self._state}")
        self._state = "publishing"
        try:
            if self._buffer and self._upload_id is not None:
                last, self._buffer = self._buffer, bytearray()
                self._send_part(last)
            parts = [future.result() for future in self._parts]
        except BaseException:
            # A part never reached S3: nothing can have been published.
            self.abort()
            raise
        try:
            if self._upload_id is None:
                response = self._client.put_object(
                    Bucket=self.bucket, Key=self.key, Body=bytes(self._buffer), **self._object_args
                )
            else:
                response = self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except Exception as error:
            return self._settle(error)
        except BaseException:
            self.abort()
            raise
        self._state = "published"
        self._shutdown()
        return self._published(response)

    def _published(
        self, response: Mapping[str, Any], settled: str | None = None
    ) -> PublishedObject:
        version = response.get("VersionId")
        return PublishedObject(
            bucket=self.bucket,
            key=self.key,
            size=self._position,
            etag=str(response["ETag"]),
            version_id=str(version) if version else None,
            settled=settled,
        )

    def _settle(self, failure: Exception) -> PublishedObject:
        """What a failed publishing request left at the key: this upload's object, or not.

        A multipart upload is aborted first: once S3 has accepted the abort, the upload can
        never complete, so the HEAD after it gives the final answer. An abort refused because
        the upload no longer exists means it completed (or was aborted by someone else: the
        HEAD tells). Each step is tried `SETTLE_ATTEMPTS` times before giving up.
        """
        cause = f"{type(failure).__name__}: {failure}"
        try:
            aborted = self._retrying(self._abort_for_settling)
            head = None if aborted else self._retrying(self._head)
        except Exception as unreachable:
            self._state = "unknown"
            self._shutdown()
            raise PublishOutcomeUnknownError(
                f"publishing {self.uri} failed ({cause}), and S3 could not be reached to learn "
                f"whether the key now holds this upload's object ({type(unreachable).__name__}: "
                f"{unreachable}); its user metadata {UPLOAD_METADATA}={self.token} "
                "identifies it"
            ) from failure
        self._shutdown()
        if head is not None and head.get("Metadata", {}).get(UPLOAD_METADATA) == self.token:
            self._state = "published"
            return self._published(head, settled=cause)
        self._state = "aborted"
        raise NotPublishedError(
            f"nothing was published to {self.uri} (the previous version, if any, is "
            f"unchanged): {cause}"
        ) from failure

    def _abort_for_settling(self) -> bool:
        """Abort the multipart upload; True if S3 accepted (so it never completed)."""
        if self._upload_id is None:
            return False
        try:
            self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self._upload_id
            )
        except Exception as error:
            if _error_code(error) in ("NoSuchUpload", "404"):
                return False
            raise
        return True

    def _head(self) -> Mapping[str, Any] | None:
        try:
            return self._client.head_object(Bucket=self.bucket, Key=self.key)
        except Exception as error:
            if _error_code(error) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def _retrying(self, step: Callable[[], T]) -> T:
        delay = self._settle_delay
        for attempt in range(SETTLE_ATTEMPTS):
            try:
                return step()
            except Exception:
                if attempt == SETTLE_ATTEMPTS - 1:
                    raise
                self._sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def abort(self) -> None:
        """Drop everything written; the key keeps its previous version (or stays absent).

        If the endpoint cannot be reached to abort the multipart upload, the upload stays
        (invisible, but billed) and `abort_failure` says why; the failure that led here is
        what the caller should see, so this does not raise.
        """
        if self._state in ("aborted", "published", "unknown"):
            return
        self._state = "aborted"
        self._buffer.clear()
        for future in self._parts:
            future.cancel()
        self._shutdown()
        if self._upload_id is not None:
            try:
                self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self._upload_id
                )
            except Exception as error:  # reported through abort_failure, never raised
                self.abort_failure = f"{type(error).__name__}: {error}"

    def __enter__(self) -> PendingUpload:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Leaving the block without `publish()` aborts, whatever the reason."""
        self.abort()

    def _send_part(self, chunk: bytearray) -> None:
        if self._upload_id is None:
            response = self._client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, **self._object_args
            )
            self._upload_id = str(response["UploadId"])
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="s3-part")
        if len(self._parts) >= S3_MAX_PARTS:
            raise ValueError(f"s3://{self.bucket}/{self.key} would exceed {S3_MAX_PARTS} parts")
        for done in (f for f in self._parts if f.done()):
            done.result()  # surface a failed part as soon as it is known
        assert self._pool is not None
        self._slots.acquire()
        part_number = len(self._parts) + 1
        upload_id = self._upload_id
        future = self._pool.submit(self._upload_part, upload_id, part_number, chunk)
        future.add_done_callback(lambda _: self._slots.release())
        self._parts.append(future)
        # Parts may differ in size: grow them so very large objects stay under the part limit.
        if part_number % 1000 == 0:
            self._part_size *= 2

    def _upload_part(self, upload_id: str, part_number: int, chunk: bytearray) -> Mapping[str, Any]:
        response = self._client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=upload_id, PartNumber=part_number, Body=chunk
        )
        with self._acknowledged_lock:
            self._acknowledged += len(chunk)
        return {"PartNumber": part_number, "ETag": response["ETag"]}

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _error_code(error: BaseException) -> str:
    """The S3 error code of a botocore ClientError (`""` for any other error)."""
    response: Any = getattr(error, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))
