"""Where partitions live in the lake: hive-style keys derived from the asset key.

    s3://<bucket>/<prefix>/<asset key path>/<partition name>=<partition key>/part-00000.parquet

e.g. `s3://lake/etl/raw/shop/sales/orders/day=2026-10-01/part-00000.parquet`. Every partition is
exactly one object with a fixed name, so a rerun replaces it instead of adding a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

PART_FILE_NAME = "part-00000.parquet"


def path_segment(name: str) -> str:
    """`name` made safe as one S3 key segment: '/', '=', '%' and control characters escaped.

    Letters (non-ASCII included), digits, spaces and most punctuation stay readable.
    """
    return quote(name, safe=" !\"#$&'()*+,-.:;<>?@[]^_`{|}~", encoding="utf-8")


@dataclass(frozen=True)
class LakeLayout:
    """The key scheme of one lake (a bucket and a prefix in it)."""

    bucket: str
    prefix: str = ""

    def __post_init__(self) -> None:
        if not self.bucket or "/" in self.bucket:
            raise ValueError(f"bucket must be a bare bucket name, got {self.bucket!r}")

    def dataset_prefix(self, asset_path: Sequence[str]) -> str:
        """The key prefix under which all partitions of one asset live (ends with '/')."""
        segments = [s for s in self.prefix.strip("/").split("/") if s]
        segments += [path_segment(part) for part in asset_path]
        return "/".join(segments) + "/"

    def partition_key(self, asset_path: Sequence[str], partition_name: str, key: str) -> str:
        """The object key of one partition's Parquet file."""
        hive = f"{path_segment(partition_name)}={path_segment(key)}"
        return f"{self.dataset_prefix(asset_path)}{hive}/{PART_FILE_NAME}"

    def unpartitioned_key(self, asset_path: Sequence[str]) -> str:
        """The object key of an unpartitioned asset's Parquet file."""
        return f"{self.dataset_prefix(asset_path)}{PART_FILE_NAME}"

    def uri(self, key: str) -> str:
        """`s3://bucket/key`."""
        return f"s3://{self.bucket}/{key}"


def object_link(bucket: str, key: str, *, endpoint_url: str | None, region: str | None) -> str:
    """An https (or http) address where a person can look at an object.

    On AWS (no endpoint, or an `amazonaws.com` one) it is the S3 console's page of the object;
    on another endpoint (MinIO, a local one) it is the object's path-style URL there.
    """
    host = urlsplit(endpoint_url or "").hostname or ""
    if endpoint_url and not (host == "amazonaws.com" or host.endswith(".amazonaws.com")):
        return f"{endpoint_url.rstrip('/')}/{quote(bucket)}/{quote(key, safe='/=')}"
    query = f"prefix={quote(key, safe='')}" + (f"&region={quote(region)}" if region else "")
    return f"https://console.aws.amazon.com/s3/object/{quote(bucket)}?{query}"
