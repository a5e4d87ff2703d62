"""A local S3 endpoint: moto's server mode on 127.0.0.1, speaking real S3 (and Glue) HTTP."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import boto3
from moto.server import ThreadedMotoServer

FAKE_ACCESS_KEY = "devstack-access-key"
FAKE_SECRET_KEY = "devstack-secret-key"  # noqa: S105 - moto accepts any credentials
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Endpoint:
    """Where the local endpoint listens and the credentials it accepts."""

    url: str
    access_key: str = FAKE_ACCESS_KEY
    secret_key: str = FAKE_SECRET_KEY
    region: str = REGION

    def environment(self) -> dict[str, str]:
        """Standard AWS variables that point boto3, Polars and DuckDB users at this endpoint."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
        }

    def client(self, service: Literal["s3", "glue"] = "s3") -> Any:
        """A boto3 client for this endpoint: S3, or the Glue catalog moto serves beside it."""
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )


class LocalS3:
    """moto's threaded server; `start()` returns the endpoint."""

    def __init__(self, port: int = 0) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.endpoint: S3Endpoint | None = None

    def start(self) -> S3Endpoint:
        """Start serving; requests are not logged (werkzeug would print each one)."""
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = S3Endpoint(url=f"http://{host}:{port}")
        return self.endpoint

    def stop(self) -> None:
        """Stop serving; everything stored is gone."""
        self._server.stop()

    def __enter__(self) -> S3Endpoint:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def create_bucket(endpoint: S3Endpoint, bucket: str) -> None:
    """Create `bucket` if it does not exist."""
    client = endpoint.client()
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
