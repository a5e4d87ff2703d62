"""Telling failures worth retrying from failures that would only fail again.

A load that lost its connection, met a server restarting or a busy S3 endpoint can succeed on a
second attempt; one that met a missing column, a refused value or a wrong password cannot. The
IO manager retries the first kind (Dagster's `RetryRequested`) and fails fast on the second.
Errors are recognised by the SQLSTATE the driver reports, by botocore's error types and codes,
and, for errors raised through the Arrow stream (which carry only a message), by the messages
libpq writes for a lost connection.
"""

from __future__ import annotations

from collections.abc import Iterator

import botocore.exceptions

TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57P", "40")
"""Connection exceptions, insufficient resources, operator intervention (server shutting down,
backend terminated, cannot connect now) and transaction rollbacks (serialization failures,
deadlocks). A statement timeout (57014) is not among them: it would time out again."""

NOT_TRANSIENT_SQLSTATES = frozenset({"57014"})

LOST_CONNECTION_MESSAGES = (
    "terminating connection due to administrator command",
    "server closed the connection unexpectedly",
    "no connection to the server",
    "could not receive data from server",
    "could not send data to server",
    "ssl syscall error",
    "connection refused",
    "timeout expired",
    "connection timed out",
    "network is unreachable",
    "the database system is shutting down",
    "the database system is starting up",
    "too many connections",
)
PERMANENT_CONNECTION_MESSAGES = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "certificate verify failed",
    "does not match host name",
    "does not exist",
    "permission denied",
)
"""A connection error with one of these will fail the same way on every attempt."""

TRANSIENT_S3_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "500",
        "502",
        "503",
        "504",
    }
)


def transient_cause(error: BaseException) -> str | None:
    """Why `error` (or an error it was raised from) is worth retrying, or None if it is not."""
    for cause in _chain(error):
        reason = _transient_reason(cause)
        if reason is not None:
            return reason
    return None


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _transient_reason(error: BaseException) -> str | None:
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return _postgres_reason(sqlstate)
    if isinstance(error, botocore.exceptions.BotoCoreError | botocore.exceptions.ClientError):
        return _s3_reason(error)
    message = str(error).lower()
    if any(pattern in message for pattern in PERMANENT_CONNECTION_MESSAGES):
        return None
    lost = next((p for p in LOST_CONNECTION_MESSAGES if p in message), None)
    return f"lost the connection to Postgres ({lost})" if lost else None


def _postgres_reason(sqlstate: str) -> str | None:
    transient = sqlstate.startswith(TRANSIENT_SQLSTATE_CLASSES)
    if transient and sqlstate not in NOT_TRANSIENT_SQLSTATES:
        return f"Postgres error {sqlstate}"
    return None


def _s3_reason(error: BaseException) -> str | None:
    unreachable = (
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectionClosedError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.ConnectTimeoutError
    )
    if isinstance(error, unreachable):
        return f"S3 endpoint unreachable ({type(error).__name__})"
    if isinstance(error, botocore.exceptions.ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in TRANSIENT_S3_CODES or (isinstance(status, int) and status >= 500):
            return f"S3 error {code or status}"
    return None
