import datetime as dt

from etl_assets.devstack.s3 import S3Endpoint
from etl_assets.lib.lake.cleanup import abort_stale_uploads, incomplete_uploads


def start_upload(endpoint: S3Endpoint, bucket: str, key: str) -> str:
    client = endpoint.client()
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)
    client.upload_part(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1024
    )
    return str(upload["UploadId"])


def test_only_uploads_old_enough_and_under_the_prefix_are_aborted(
    s3_endpoint: S3Endpoint, bucket: str
) -> None:
    client = s3_endpoint.client()
    orphan = start_upload(s3_endpoint, bucket, "lake/raw/a/day=2026-10-01/part-00000.parquet")
    start_upload(s3_endpoint, bucket, "elsewhere/b.parquet")
    found = incomplete_uploads(client, bucket, "lake/")
    assert [u.upload_id for u in found] == [orphan]

    # Ages are counted from the initiation time S3 reports (moto reports a fixed one).
    started = found[0].initiated
    # A young upload may belong to a load still running: it stays.
    young = started + dt.timedelta(hours=1)
    assert abort_stale_uploads(client, bucket, "lake/", now=young) == []
    later = started + dt.timedelta(hours=7)
    preview = abort_stale_uploads(client, bucket, "lake/", now=later, dry_run=True)
    assert [u.upload_id for u in preview] == [orphan]
    assert len(incomplete_uploads(client, bucket, "lake/")) == 1

    aborted = abort_stale_uploads(client, bucket, "lake/", now=later)
    assert [u.upload_id for u in aborted] == [orphan]
    assert incomplete_uploads(client, bucket, "lake/") == []
    assert len(incomplete_uploads(client, bucket, "")) == 1
