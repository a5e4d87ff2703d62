"""One session against a real Postgres: named, read-only, time-limited, secrets redacted."""

import pytest
from psycopg.conninfo import make_conninfo

from etl_assets.lib.errors import ExtractError
from etl_assets.lib.postgres.session import ConnectionSettings, Snapshot


def test_the_session_is_named_read_only_and_time_limited(events_db: str) -> None:
    settings = ConnectionSettings(conninfo=events_db, statement_timeout_ms=1234)
    with Snapshot(settings, "raw/test/events/2026-10-01") as snapshot:
        row = snapshot.query(
            "SELECT current_setting('application_name'), current_setting('statement_timeout'),"
            " current_setting('transaction_read_only'), current_setting('transaction_isolation')"
        )[0]
        assert row == ("raw/test/events/2026-10-01", "1234ms", "on", "repeatable read")
        with pytest.raises(Exception, match="read-only transaction"):
            snapshot.query("CREATE TABLE should_not_exist (a int)")


def test_a_statement_over_the_time_limit_is_cancelled_with_a_clear_error(events_db: str) -> None:
    settings = ConnectionSettings(conninfo=events_db, statement_timeout_ms=100)
    with Snapshot(settings, "t") as snapshot, pytest.raises(Exception, match="statement timeout"):
        snapshot.query("SELECT pg_sleep(2)")


def test_connection_failures_never_show_the_password(events_db: str) -> None:
    dsn = make_conninfo(events_db, user="nobody_here", host="127.0.0.1")
    settings = ConnectionSettings(conninfo=dsn, password="s3cr3t-Pa55word")
    with pytest.raises(ExtractError) as raised, Snapshot(settings, "t"):
        pass
    assert "s3cr3t-Pa55word" not in str(raised.value)
    assert "nobody_here@127.0.0.1" in str(raised.value)
    assert settings.redact("password=s3cr3t-Pa55word x") == "password=*** x"
    assert "s3cr3t" not in repr(settings)
