import adbc_driver_manager
import botocore.exceptions
import pytest

from etl_assets.lib.errors import ExtractError
from etl_assets.lib.transient import transient_cause
from etl_assets_tests.support import s3_error


def postgres_error(sqlstate: str, message: str = "failed") -> Exception:
    return adbc_driver_manager.OperationalError(
        message, status_code=adbc_driver_manager.AdbcStatusCode.IO, sqlstate=sqlstate
    )


@pytest.mark.parametrize(
    "error",
    [
        postgres_error("57P01", "terminating connection due to administrator command"),
        postgres_error("08006"),
        postgres_error("53300"),
        postgres_error("40001"),
        OSError("IO: [libpq] server closed the connection unexpectedly"),
        ExtractError("cannot connect to u@h:5432/db: Connection refused"),
        botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        s3_error("SlowDown", 503),
        s3_error("InternalError", 500),
    ],
)
def test_errors_worth_a_second_attempt_are_transient(error: Exception) -> None:
    assert transient_cause(error) is not None


@pytest.mark.parametrize(
    "error",
    [
        postgres_error("57014", "canceling statement due to statement timeout"),
        postgres_error("28P01", "connection to server failed: password authentication failed"),
        postgres_error("42703", "column does not exist"),
        ExtractError("cannot connect: FATAL: password authentication failed for user x"),
        ExtractError("cannot connect: server certificate does not match host name"),
        s3_error("AccessDenied", 403),
        s3_error("NoSuchBucket", 404),
        ValueError("the contract changed"),
    ],
)
def test_errors_that_would_fail_again_are_not(error: Exception) -> None:
    assert transient_cause(error) is None


def test_the_cause_of_a_wrapping_error_is_found() -> None:
    def wrapped() -> None:
        try:
            raise postgres_error("57P01")
        except Exception as error:
            raise RuntimeError("publishing raw/x [2026-10-01] failed") from error

    with pytest.raises(RuntimeError) as caught:
        wrapped()
    assert transient_cause(caught.value) == "Postgres error 57P01"
