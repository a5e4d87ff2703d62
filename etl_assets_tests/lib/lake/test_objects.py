from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.config
import pytest

from etl_assets.devstack.s3 import S3Endpoint
from etl_assets.lib.errors import NotPublishedError, PublishOutcomeUnknownError
from etl_assets.lib.lake.objects import (
    MIB,
    UPLOAD_METADATA,
    Encryption,
    PendingUpload,
    ServerSideEncryption,
)
from etl_assets_tests.faults import Faults, FaultyS3Proxy, Rule


def upload(endpoint: S3Endpoint, bucket: str, key: str, **kwargs: Any) -> PendingUpload:
    return PendingUpload(endpoint.client(), bucket, key, encryption=Encryption(), **kwargs)


def body(endpoint: S3Endpoint, bucket: str, key: str) -> bytes:
    return endpoint.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def open_multipart_uploads(endpoint: S3Endpoint, bucket: str) -> list[str]:
    response = endpoint.client().list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in response.get("Uploads", [])]


def test_a_small_object_appears_only_on_publish(s3_endpoint: S3Endpoint, bucket: str) -> None:
    with upload(s3_endpoint, bucket, "a/b.bin") as pending:
        pending.write(b"hello")
        assert pending.tell() == 5
        assert "Contents" not in s3_endpoint.client().list_objects_v2(Bucket=bucket)
        published = pending.publish()
    assert published.uri == f"s3://{bucket}/a/b.bin"
    assert published.size == 5
    assert body(s3_endpoint, bucket, "a/b.bin") == b"hello"
    head = s3_endpoint.client().head_object(Bucket=bucket, Key="a/b.bin")
    assert head["ServerSideEncryption"] == "AES256"


def test_a_large_object_is_uploaded_in_parts_and_completed_on_publish(
    s3_endpoint: S3Endpoint, bucket: str
) -> None:
    data = bytes(range(256)) * (12 * MIB // 256 + 7)
    with upload(s3_endpoint, bucket, "big.bin", part_size=5 * MIB) as pending:
        for offset in range(0, len(data), 1_000_003):
            pending.write(data[offset : offset + 1_000_003])
        assert open_multipart_uploads(s3_endpoint, bucket) == ["big.bin"]
        assert "Contents" not in s3_endpoint.client().list_objects_v2(Bucket=bucket)
        # Only whole parts S3 acknowledged count as uploaded; at most two are in flight.
        assert pending.uploaded in (0, 5 * MIB, 10 * MIB)
        pending.publish()
        assert pending.uploaded == len(data)
    assert body(s3_endpoint, bucket, "big.bin") == data
    assert open_multipart_uploads(s3_endpoint, bucket) == []


def test_every_part_but_the_last_has_exactly_the_part_size(
    s3_endpoint: S3Endpoint, bucket: str
) -> None:
    data = bytes(range(256)) * (11 * MIB // 256 + 3)
    with upload(s3_endpoint, bucket, "parts.bin", part_size=5 * MIB) as pending:
        # Writes of every size, including ones larger than a part.
        for offset, size in zip(range(0, len(data), 7 * MIB), (7 * MIB, 6 * MIB), strict=False):
            pending.write(memoryview(data)[offset : offset + size])
        pending.publish()
    client = s3_endpoint.client()
    sizes = [
        client.head_object(Bucket=bucket, Key="parts.bin", PartNumber=number)["ContentLength"]
        for number in (1, 2, 3)
    ]
    assert sizes == [5 * MIB, 5 * MIB, len(data) - 10 * MIB]
    assert body(s3_endpoint, bucket, "parts.bin") == data


def test_a_failure_before_publish_leaves_the_previous_version_and_no_upload(
    s3_endpoint: S3Endpoint, bucket: str
) -> None:
    s3_endpoint.client().put_object(Bucket=bucket, Key="p.bin", Body=b"previous")
    pending = upload(s3_endpoint, bucket, "p.bin", part_size=5 * MIB)

    def write_then_fail() -> None:
        with pending:
            pending.write(b"x" * (11 * MIB))
            raise RuntimeError("failed mid-way")

    with pytest.raises(RuntimeError, match="mid-way"):
        write_then_fail()
    assert body(s3_endpoint, bucket, "p.bin") == b"previous"
    assert open_multipart_uploads(s3_endpoint, bucket) == []


def test_writes_after_publish_or_abort_are_refused(s3_endpoint: S3Endpoint, bucket: str) -> None:
    pending = upload(s3_endpoint, bucket, "x")
    pending.publish()
    with pytest.raises(ValueError, match="is published"):
        pending.write(b"more")
    aborted = upload(s3_endpoint, bucket, "y")
    aborted.abort()
    with pytest.raises(ValueError, match="is aborted"):
        aborted.publish()


def test_kms_encryption_is_requested_with_the_key(s3_endpoint: S3Endpoint, bucket: str) -> None:
    encryption = Encryption(ServerSideEncryption.KMS, kms_key_id="alias/lake")
    with PendingUpload(s3_endpoint.client(), bucket, "k", encryption=encryption) as pending:
        pending.write(b"secret rows")
        pending.publish()
    head = s3_endpoint.client().head_object(Bucket=bucket, Key="k")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == "alias/lake"


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="needs the aws:kms"):
        Encryption(ServerSideEncryption.S3, kms_key_id="k")
    with pytest.raises(ValueError, match="part_size"):
        PendingUpload(object(), "b", "k", encryption=Encryption(), part_size=MIB)  # pyright: ignore[reportArgumentType]


def proxied_client(endpoint: S3Endpoint, url: str) -> Any:
    """A client through the proxy that tries each request once (the proxy decides)."""
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name=endpoint.region,
        aws_access_key_id=endpoint.access_key,
        aws_secret_access_key=endpoint.secret_key,
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )


@contextmanager
def publish_through(
    endpoint: S3Endpoint, bucket: str, faults: Faults, size: int
) -> Generator[PendingUpload]:
    """An upload of `size` bytes through a faulty proxy; `publish()` is left to the caller."""
    endpoint.client().put_object(Bucket=bucket, Key="k", Body=b"previous")
    with FaultyS3Proxy(endpoint.url, faults) as proxy:
        pending = PendingUpload(
            proxied_client(endpoint, proxy.url),
            bucket,
            "k",
            encryption=Encryption(),
            part_size=5 * MIB,
            metadata={"etl-assets-run": "run-1"},
            settle_delay_seconds=0.01,
        )
        pending.write(b"n" * size)
        yield pending


@pytest.mark.parametrize("size", [10, 6 * MIB], ids=["put", "multipart"])
def test_a_publish_whose_reply_was_lost_is_found_published(
    s3_endpoint: S3Endpoint, bucket: str, size: int
) -> None:
    request = "object_put" if size < 5 * MIB else "complete"
    faults = Faults(rules=[Rule(request, "drop_reply", times=1)])
    with publish_through(s3_endpoint, bucket, faults, size) as pending:
        published = pending.publish()
    head = s3_endpoint.client().head_object(Bucket=bucket, Key="k")
    assert head["Metadata"] == {UPLOAD_METADATA: pending.token, "etl-assets-run": "run-1"}
    assert published.etag == head["ETag"]
    assert published.size == size == head["ContentLength"]
    assert published.settled is not None
    assert "ConnectionClosedError" in published.settled
    assert open_multipart_uploads(s3_endpoint, bucket) == []


@pytest.mark.parametrize("size", [10, 6 * MIB], ids=["put", "multipart"])
def test_a_publish_that_never_reached_s3_is_reported_unpublished(
    s3_endpoint: S3Endpoint, bucket: str, size: int
) -> None:
    request = "object_put" if size < 5 * MIB else "complete"
    faults = Faults(rules=[Rule(request, "drop", times=1)])
    with (
        publish_through(s3_endpoint, bucket, faults, size) as pending,
        pytest.raises(NotPublishedError, match=r"nothing was published to s3://[^/]+/k "),
    ):
        pending.publish()
    assert body(s3_endpoint, bucket, "k") == b"previous"
    assert open_multipart_uploads(s3_endpoint, bucket) == []


def test_a_publish_that_cannot_be_settled_says_so(s3_endpoint: S3Endpoint, bucket: str) -> None:
    # The complete's reply is lost, then S3 stops answering: neither the abort nor the HEAD
    # that would settle it gets through.
    faults = Faults(
        rules=[Rule("complete", "drop_reply", times=1), Rule("any", "drop", times=1_000)]
    )
    with (
        publish_through(s3_endpoint, bucket, faults, 6 * MIB) as pending,
        pytest.raises(PublishOutcomeUnknownError) as raised,
    ):
        pending.publish()
    message = str(raised.value)
    assert "S3 could not be reached to learn whether the key now holds" in message
    assert f"{UPLOAD_METADATA}={pending.token}" in message
    # It was in fact published; the upload's token says which object is this one.
    head = s3_endpoint.client().head_object(Bucket=bucket, Key="k")
    assert head["Metadata"][UPLOAD_METADATA] == pending.token
