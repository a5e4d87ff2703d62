"""Source safety, transport security, secrets and hostile configuration, against real services."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import pwd
import re
import shutil
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from etl_assets.cli.main import main as cli_main
from etl_assets.components.incremental import build_change_sensor, build_reconcile_schedule
from etl_assets.components.table_assets import (
    build_table_assets,
    postgres_io_manager_key,
    postgres_source_key,
)
from etl_assets.devstack.postgres import EmbeddedPostgres, ServerAddress
from etl_assets.devstack.s3 import S3Endpoint
from etl_assets.devstack.tls import CertificateFiles, TlsTerminator, make_certificates
from etl_assets.lib.errors import ExtractError
from etl_assets.lib.postgres.session import ConnectionSettings, Snapshot
from etl_assets.lib.table.spec import IncrementalSpec, ReconcileSpec
from etl_assets.lib.table.transforms import Transform
from etl_assets.resources.postgres import PostgresSource, PostgresWindowIOManager
from etl_assets_tests.pg_wire import StartupRelay
from etl_assets_tests.support import (
    SOURCE,
    Pipeline,
    failure_text,
    on_every_batch,
    query,
    revised,
    run_sql,
    spec,
)

EVENTS = """
CREATE TABLE events (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, label text);
INSERT INTO events
SELECT g, timestamptz '2026-10-02 00:00+00' + g * interval '1 minute', 'row ' || g
FROM generate_series(1, 600) g;
"""
DAY = "2026-10-02"


@pytest.fixture
def events(pipeline: Pipeline) -> Pipeline:
    run_sql(pipeline.conninfo, EVENTS)
    return pipeline


def reader_conninfo(pipeline: Pipeline, role: str, password: str) -> str:
    return make_conninfo(pipeline.conninfo, user=role, password=password)


def test_a_role_with_only_usage_and_select_loads_a_partition(events: Pipeline) -> None:
    run_sql(
        events.conninfo,
        "DROP ROLE IF EXISTS select_only; CREATE ROLE select_only LOGIN PASSWORD 'select-only-pw'"
        " NOSUPERUSER NOCREATEDB NOCREATEROLE; GRANT USAGE ON SCHEMA public TO select_only;"
        " GRANT SELECT ON events TO select_only",
    )
    table = spec(columns=("id", "created_at", "label"))
    result = events.materialize(
        table,
        partition=DAY,
        source={"dsn": reader_conninfo(events, "select_only", "select-only-pw")},
    )
    assert result.success
    rows = pq.read_table(io.BytesIO(events.partition_bytes(table, DAY))).num_rows
    assert rows == 600


def test_every_session_is_read_only_even_for_a_superuser(events: Pipeline) -> None:
    with Snapshot(ConnectionSettings(events.conninfo), "read-only check") as snapshot:
        assert snapshot.scalar("SELECT current_setting('transaction_read_only')") == "on"
        assert (
            snapshot.scalar("SELECT current_setting('transaction_isolation')") == "repeatable read"
        )
        with pytest.raises(Exception, match="read-only transaction"):
            snapshot.query("INSERT INTO events VALUES (0, now(), 'x') RETURNING id")
    [(count,)] = query(events.conninfo, "SELECT count(*) FROM events WHERE id = 0")
    assert count == 0


LOGGED_SOURCE = """
CREATE TABLE events (
    id bigint PRIMARY KEY,
    created_at timestamptz NOT NULL,
    label text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON events (updated_at);
INSERT INTO events (id, created_at, label)
SELECT g, timestamptz '2026-10-02 00:00+00' + g * interval '1 minute', 'row ' || g
FROM generate_series(1, 2000) g;
-- No index on the key: suspected duplicates are confirmed by a side session.
CREATE TABLE dupes (id bigint NOT NULL, created_at timestamptz NOT NULL, label text);
INSERT INTO dupes VALUES
    (1, '2026-10-02 01:00+00', 'a'),
    (1, '2026-10-02 02:00+00', 'b'),
    (2, '2026-10-02 03:00+00', 'c');
"""
# Every statement and connection in the server's log, as JSON lines with the session's id, its
# application_name and the client's port.
LOG_EVERY_STATEMENT = [
    "-c logging_collector=on",
    "-c log_destination=jsonlog",
    "-c log_statement=all",
    "-c log_connections=on",
    "-c log_disconnections=on",
]
PROJECT_SESSION_NAMES = ("raw/", "etl-assets ")
MODE_CHANGE = re.compile(
    r"\bREAD\s+WRITE\b|\bSESSION\s+CHARACTERISTICS\b|^\s*(SET|RESET)\b.*READ_ONLY",
    re.IGNORECASE | re.DOTALL,
)


@dataclass
class LoggedSession:
    """One session in the server's log: who connected from where, and what it ran."""

    session_id: str
    remote_port: int | None = None
    database: str | None = None
    application_name: str = ""
    statements: list[str] = field(default_factory=list)
    connected: str = ""
    disconnected: str = ""


def logged_sessions(data_dir: Path) -> list[LoggedSession]:
    """Every client session in the server's JSON log, in the order they connected."""
    sessions: dict[str, LoggedSession] = {}
    for log in sorted((data_dir / "log").glob("*.json")):
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            if "remote_host" not in entry:
                continue  # the server's own processes
            session = sessions.setdefault(entry["session_id"], LoggedSession(entry["session_id"]))
            session.remote_port = entry.get("remote_port", session.remote_port)
            session.database = entry.get("dbname", session.database)
            session.application_name = entry.get("application_name", session.application_name)
            message = str(entry["message"])
            if message.startswith("connection received"):
                session.connected = entry["timestamp"]
            elif message.startswith("disconnection"):
                session.disconnected = entry["timestamp"]
            statement = re.match(r"(?:statement|execute [^:]*): (.*)", message, re.DOTALL)
            if statement:
                session.statements.append(statement[1])
    return sorted(sessions.values(), key=lambda s: s.connected)


def statements_outside_read_only(read_only_from_startup: bool, statements: list[str]) -> list[str]:
    """The statements that ran with `transaction_read_only` off.

    A statement runs read-only inside a `BEGIN ... READ ONLY` block, and outside one when the
    session started with `default_transaction_read_only=on`. A statement that changes the mode
    counts as outside.
    """
    outside: list[str] = []
    block: bool | None = None  # the read-only mode of the open BEGIN block, if any
    for statement in statements:
        words = statement.split()
        first = words[0].upper().rstrip(";") if words else ""
        if MODE_CHANGE.search(statement):
            outside.append(statement)
            continue
        if first in ("BEGIN", "START"):
            block = read_only_from_startup or "READ ONLY" in " ".join(words).upper()
        read_only = block if block is not None else read_only_from_startup
        if not read_only:
            outside.append(statement)
        if first in ("COMMIT", "ROLLBACK", "END", "ABORT"):
            block = None
    return outside


def test_statements_outside_read_only_sees_what_ran_before_begin_and_after_rollback() -> None:
    statements = [
        "SELECT version();",
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        "COPY (SELECT 1) TO STDOUT",
        "ROLLBACK",
        "SELECT 2",
    ]
    assert statements_outside_read_only(False, statements) == ["SELECT version();", "SELECT 2"]
    assert statements_outside_read_only(True, statements) == []
    assert statements_outside_read_only(True, ["BEGIN READ WRITE", "SELECT 1"]) == [
        "BEGIN READ WRITE"
    ]
    assert statements_outside_read_only(True, ["SET default_transaction_read_only = off"]) == [
        "SET default_transaction_read_only = off"
    ]


def test_every_statement_of_every_session_runs_read_only_named_and_time_limited(
    instance: dg.DagsterInstance,
    s3_endpoint: S3Endpoint,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A server of its own, logging every connection and statement. The project reaches it only
    # through a relay that records each connection's startup packet (the options a session
    # starts with are not in the server's log); the test's own setup connects directly.
    server = EmbeddedPostgres(tmp_path / "logged")
    server.start(extra_settings=LOG_EVERY_STATEMENT)
    try:
        direct = server.create_database("source")
        run_sql(direct, LOGGED_SOURCE)
        with StartupRelay(server.address.host, server.address.port) as relay:
            through_relay = make_conninfo(
                direct, port=str(relay.port), sslmode="disable", gssencmode="disable"
            )
            run_every_kind_of_session(Pipeline(instance, through_relay, bucket, s3_endpoint))
            monkeypatch.setenv("LOGGED_SOURCE_DSN", through_relay)
            assert (
                cli_main(
                    ["introspect", "--dsn-env", "LOGGED_SOURCE_DSN", "public.events"],
                    out=io.StringIO(),
                )
                == 0
            )
        server.stop()  # the log is complete once the server has stopped
        sessions = [s for s in logged_sessions(server.data_dir) if s.database == "source"]
    finally:
        server.stop()

    project = [s for s in sessions if s.remote_port in relay.startups]
    # Every connection through the relay is in the log, and every session in the log that bears
    # a project name came through the relay.
    assert len(project) == len(relay.startups)
    assert not [
        s.application_name
        for s in sessions
        if s not in project and s.application_name.startswith(PROJECT_SESSION_NAMES)
    ]
    names = [s.application_name for s in project]
    assert set(names) >= {
        f"raw/testsrc/public/events/{DAY}",
        f"raw/testsrc/public/events/{DAY}...2026-10-03",
        f"raw/testsrc/public/dupes/{DAY}",
        f"raw/testsrc/public/dupes/{DAY} (side)",
        "etl-assets sensor raw/testsrc/public/events",
        "etl-assets reconcile raw/testsrc/public/events",
        "etl-assets introspect",
    }
    outside: dict[str, list[str]] = {}
    for session in project:
        settings = relay.startups[session.remote_port or 0].settings()
        # Named from the start, and time-limited.
        assert settings["application_name"] == session.application_name
        assert session.application_name.startswith(PROJECT_SESSION_NAMES)
        assert int(settings["statement_timeout"]) > 0
        assert int(settings["idle_in_transaction_session_timeout"]) > 0
        assert session.statements
        read_only = settings.get("default_transaction_read_only") == "on"
        ran_outside = statements_outside_read_only(read_only, session.statements)
        if ran_outside:
            outside[f"{session.application_name} ({session.session_id})"] = ran_outside
    assert outside == {}

    # The README's words: a load opens two sessions one after the other, the driver's own (which
    # reads the type catalog) and then the load's; it never holds two at once.
    first, second = [s for s in project if s.application_name == f"raw/testsrc/public/events/{DAY}"]
    assert first.disconnected <= second.connected
    assert not any("BEGIN" in statement for statement in first.statements)
    assert any("BEGIN" in statement for statement in second.statements)


def run_every_kind_of_session(source: Pipeline) -> None:
    """Loads (one partition, a range, one whose key check opens a side session), a change
    sensor's ticks and a reconcile schedule's fingerprints, all against `source`."""
    table = revised(
        spec(columns=("id", "created_at", "label", "updated_at")),
        incremental=IncrementalSpec(change_column="updated_at", settle_lag=dt.timedelta(seconds=1)),
        reconcile=ReconcileSpec(cron="0 * * * *", partitions=3),
    )
    assert source.materialize(table, partition=DAY).success
    assert source.materialize(table, partition_range=(DAY, "2026-10-03")).success
    dupes = spec(table="dupes", columns=("id", "created_at", "label"))
    assert source.materialize(dupes, partition=DAY).success
    built = build_table_assets(SOURCE, table, None)
    resources = source.resources(table)
    key = postgres_source_key(SOURCE)
    sensor = build_change_sensor(table, built.raw.key, built.partitions_def, key)
    cursor = None
    for _ in range(2):  # the first tick reads the clock, the second one the changes too
        with dg.build_sensor_context(
            instance=source.instance, resources=resources, cursor=cursor
        ) as context:
            tick = sensor(context)
        assert isinstance(tick, dg.SensorResult)
        cursor = tick.cursor
    schedule = build_reconcile_schedule(table, built.raw.key, built.partitions_def, key)
    with dg.build_schedule_context(
        instance=source.instance,
        resources=resources,
        scheduled_execution_time=dt.datetime.now(dt.UTC),
    ) as context:
        assert schedule(context) is not None


def test_options_in_the_dsn_cannot_turn_read_only_off(events: Pipeline) -> None:
    writable = make_conninfo(events.conninfo, options="-c default_transaction_read_only=off")
    with Snapshot(ConnectionSettings(writable), "read-only check") as snapshot:
        assert snapshot.scalar("SELECT current_setting('default_transaction_read_only')") == "on"
        assert snapshot.scalar("SELECT current_setting('transaction_read_only')") == "on"


def session_names_seen_by_a_transform(conninfo: str, seen: list[str]) -> Transform:
    """A transform that, on its first batch, records the extraction sessions the server sees."""

    def look() -> None:
        if not seen:
            rows = query(
                conninfo,
                "SELECT application_name FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name LIKE 'raw/%'"
                " ORDER BY 1",
            )
            seen.extend(str(name) for (name,) in rows)

    return on_every_batch(look)


def test_a_load_names_its_session_after_the_asset_and_its_partitions(events: Pipeline) -> None:
    run_sql(
        events.conninfo,
        "INSERT INTO events SELECT g, timestamptz '2026-10-03 00:00+00' + g * interval '1 minute',"
        " 'next ' || g FROM generate_series(1001, 1100) g",
    )
    table = spec(columns=("id", "created_at", "label"))
    one: list[str] = []
    transform = session_names_seen_by_a_transform(events.conninfo, one)
    assert events.materialize(table, partition=DAY, transform=transform).success
    assert one == ["raw/testsrc/public/events/2026-10-02"]
    both: list[str] = []
    transform = session_names_seen_by_a_transform(events.conninfo, both)
    assert events.materialize(
        table, partition_range=(DAY, "2026-10-03"), transform=transform
    ).success
    assert both == ["raw/testsrc/public/events/2026-10-02...2026-10-03"]


def test_sessions_are_named_after_the_asset_and_partition(events: Pipeline) -> None:
    name = "raw/testsrc/public/events/2026-10-02"
    with Snapshot(ConnectionSettings(events.conninfo), name) as snapshot:
        [(state,)] = query(
            events.conninfo,
            "SELECT state FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            [name],
        )
        assert snapshot.scalar("SELECT current_setting('statement_timeout')") == "1h"
        assert (
            snapshot.scalar("SELECT current_setting('idle_in_transaction_session_timeout')")
            == "10min"
        )
    assert state == "idle in transaction"


@dataclass(frozen=True)
class TlsEndpoint:
    """A TLS port in front of a database holding the events table, and two CAs."""

    port: int
    conninfo: str
    right_ca: Path
    wrong_ca: Path
    server_sees_tls: bool
    """False behind the terminator: the server itself then sees plain TCP from 127.0.0.1."""


@pytest.fixture(params=["terminator", "server"])
def tls(
    request: pytest.FixtureRequest, events: Pipeline, pg_server: ServerAddress, tmp_path: Path
) -> Generator[TlsEndpoint]:
    """TLS with a certificate for `localhost` only, signed by a CA made for the test.

    `terminator`: TLS terminated in front of the test server (built without SSL).
    `server`: a second Postgres with `ssl=on`, from an SSL-capable installation on PATH
    (Debian's); skipped where there is none.
    """
    right = make_certificates(tmp_path / "right", ("localhost",))
    wrong = make_certificates(tmp_path / "wrong", ("localhost",))
    if request.param == "terminator":
        with TlsTerminator(pg_server.host, pg_server.port, right) as terminator:
            yield TlsEndpoint(
                terminator.port, events.conninfo, right.ca_certificate, wrong.ca_certificate, False
            )
        return
    bindir = ssl_capable_bindir()
    if bindir is None:
        pytest.skip("no Postgres installation with SSL support on PATH")
    with ssl_server(bindir, tmp_path / "ssl-server", right) as server:
        conninfo = server.create_database("tls")
        run_sql(conninfo, EVENTS)
        yield TlsEndpoint(server.port, conninfo, right.ca_certificate, wrong.ca_certificate, True)


def ssl_capable_bindir() -> Path | None:
    """The directory of a `pg_ctl` on PATH whose server supports SSL, if there is one."""
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        return None
    bindir = Path(pg_ctl).resolve().parent
    postgres = (bindir / "postgres").read_bytes()
    return None if b"SSL is not supported by this build" in postgres else bindir


@contextmanager
def ssl_server(
    bindir: Path, base: Path, certificates: CertificateFiles
) -> Generator[EmbeddedPostgres]:
    server = EmbeddedPostgres(base, bindir=bindir)
    base.mkdir(parents=True, exist_ok=True)
    # The server reads its key as its own user, and only from a file nobody else can read.
    key = base / "server.key"
    shutil.copy(certificates.server_key, key)
    shutil.copy(certificates.server_certificate, base / "server.pem")
    key.chmod(0o600)
    if os.geteuid() == 0:
        service = pwd.getpwnam("postgres") if _has_user("postgres") else None
        if service is not None:
            for path in (key, base / "server.pem"):
                os.chown(path, service.pw_uid, service.pw_gid)
    server.start(["-c ssl=on", f"-c ssl_cert_file={base / 'server.pem'}", f"-c ssl_key_file={key}"])
    try:
        yield server
    finally:
        server.stop()


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def tls_settings(endpoint: TlsEndpoint, host: str, ca: Path) -> ConnectionSettings:
    return ConnectionSettings(
        make_conninfo(
            endpoint.conninfo,
            host=host,
            port=str(endpoint.port),
            sslmode="verify-full",
            sslrootcert=str(ca),
        )
    )


def test_verify_full_accepts_the_right_ca_and_host_and_refuses_the_rest(tls: TlsEndpoint) -> None:
    with Snapshot(tls_settings(tls, "localhost", tls.right_ca), "tls check") as snapshot:
        assert snapshot.scalar("SELECT count(*) FROM events") == 600
        server_tls = snapshot.scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert server_tls is tls.server_sees_tls
    with pytest.raises(ExtractError, match="certificate verify failed"):
        Snapshot(tls_settings(tls, "localhost", tls.wrong_ca), "x").__enter__()
    with pytest.raises(ExtractError, match=re.escape('does not match host name "127.0.0.1"')):
        Snapshot(tls_settings(tls, "127.0.0.1", tls.right_ca), "x").__enter__()


def test_a_partition_loads_over_verified_tls(events: Pipeline, tls: TlsEndpoint) -> None:
    table = spec(columns=("id", "created_at", "label"))
    result = events.materialize(
        table,
        partition=DAY,
        source={
            "dsn": make_conninfo(tls.conninfo, host="localhost", port=str(tls.port)),
            "sslmode": "verify-full",
            "sslrootcert": str(tls.right_ca),
        },
    )
    assert result.success
    rows = pq.read_table(io.BytesIO(events.partition_bytes(table, DAY))).num_rows
    assert rows == 600


SECRET_PASSWORD = "Tls-Pw-Never-Logged-0x5f3759df"
SECRET_AWS_KEY = "aws-secret-never-logged-0x1337"


def test_no_secret_reaches_logs_metadata_run_config_or_errors(
    events: Pipeline, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run_sql(
        events.conninfo,
        f"DROP ROLE IF EXISTS secretive; CREATE ROLE secretive LOGIN PASSWORD '{SECRET_PASSWORD}';"
        " GRANT SELECT ON events TO secretive",
    )
    monkeypatch.setenv("SECRET_READER_PASSWORD", SECRET_PASSWORD)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", events.endpoint.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_AWS_KEY)
    parts = {k: str(v) for k, v in conninfo_to_dict(events.conninfo).items() if k != "password"}
    dsn = make_conninfo("", **{**parts, "user": "secretive"})
    table = spec(columns=("id", "created_at", "label"))
    built = build_table_assets(SOURCE, table, None)

    def run(password_variable: str) -> dg.ExecuteInProcessResult:
        resources = events.resources(table)
        resources[postgres_io_manager_key(SOURCE)] = PostgresWindowIOManager(
            source=PostgresSource(dsn=dsn, password=dg.EnvVar(password_variable))
        )
        return dg.materialize(
            [built.source, built.raw],
            partition_key=DAY,
            instance=events.instance,
            resources=resources,
            selection=[built.raw.key],
            raise_on_error=False,
        )

    succeeded = run("SECRET_READER_PASSWORD")
    assert succeeded.success
    # A wrong password fails: the message names the connection, never a secret.
    monkeypatch.setenv("WRONG_READER_PASSWORD", SECRET_PASSWORD + "-wrong")
    failed = run("WRONG_READER_PASSWORD")
    assert not failed.success
    error = failure_text(failed)
    assert "password authentication failed" in error
    assert "secretive@" in error

    secrets = (SECRET_PASSWORD, SECRET_AWS_KEY)
    for result in (succeeded, failed):
        recorded = [entry.to_json() for entry in events.instance.all_logs(result.run_id)]
        run_record = events.instance.get_run_by_id(result.run_id)
        assert run_record is not None
        texts = [*recorded, str(run_record.run_config), str(run_record.tags)]
        assert recorded
        assert not [t for t in texts if any(s in t for s in secrets)]
    # Captured compute logs and everything else the instance wrote to disk.
    written = [p for p in Path(events.instance.root_directory).rglob("*") if p.is_file()]
    assert written
    leaked = [p for p in written if any(s.encode() in p.read_bytes() for s in secrets)]
    assert leaked == []


HOSTILE_SCHEMA = 'we"ird; schema -- ä'
HOSTILE_TABLE = "tä'ble; DROP TABLE victim; --"
HOSTILE_DDL = '''
CREATE TABLE victim (id int);
CREATE SCHEMA "we""ird; schema -- ä";
CREATE TABLE "we""ird; schema -- ä"."tä'ble; DROP TABLE victim; --" (
    "Ïd; --" bigint PRIMARY KEY, "created ""at""" timestamptz NOT NULL, "x y" text
);
INSERT INTO "we""ird; schema -- ä"."tä'ble; DROP TABLE victim; --"
SELECT g, timestamptz '2026-10-02 00:00+00' + g * interval '1 hour', 'v' || g
FROM generate_series(1, 10) g;
'''


def test_hostile_identifiers_are_quoted_and_read_exactly_that_relation(
    pipeline: Pipeline,
) -> None:
    run_sql(pipeline.conninfo, HOSTILE_DDL)
    table = spec(
        schema=HOSTILE_SCHEMA,
        table=HOSTILE_TABLE,
        partition_column='created "at"',
        primary_key=("Ïd; --",),
        columns=("Ïd; --", 'created "at"', "x y"),
    )
    assert pipeline.materialize(table, partition=DAY).success
    lake = pq.read_table(io.BytesIO(pipeline.partition_bytes(table, DAY)))
    assert lake.column_names == ["Ïd; --", 'created "at"', "x y"]
    assert lake.column("Ïd; --").to_pylist() == list(range(1, 11))
    assert query(pipeline.conninfo, "SELECT to_regclass('public.victim') IS NOT NULL") == [(True,)]


def test_an_unreachable_database_fails_at_connect_naming_it(pipeline: Pipeline) -> None:
    run_sql(pipeline.conninfo, EVENTS)
    table = spec(columns=("id", "created_at", "label"))
    result = pipeline.materialize(
        table,
        partition=DAY,
        raise_on_error=False,
        source={"dsn": make_conninfo(pipeline.conninfo, port="1"), "connect_timeout_seconds": 2},
        writer={"transient_retries": 0},
    )
    assert not result.success
    error = failure_text(result)
    assert "cannot connect to postgres@127.0.0.1:1/" in error
    assert "Connection refused" in error


def test_a_missing_bucket_fails_before_any_row_is_read(events: Pipeline) -> None:
    table = spec(columns=("id", "created_at", "label"))
    result = events.materialize(
        table, partition=DAY, raise_on_error=False, lake={"bucket": "no-such-bucket-here"}
    )
    assert not result.success
    error = failure_text(result)
    assert "no-such-bucket-here" in error
    # Checked before the snapshot opens: the source is not read for nothing.
    assert "LakeConfigurationError" in error
    assert "does not exist or is not accessible" in error
