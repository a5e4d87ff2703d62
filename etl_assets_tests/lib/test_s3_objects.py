from typing import Any

import pytest

from etl_assets.devstack.s3 import S3Endpoint
from etl_assets.lib.s3_objects import MIB, Encryption, PendingUpload, ServerSideEncryption


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
