"""Creating and dropping a source's publication and logical replication slot.

Everything else the project does on a source is read-only; these two run in a writable session
of their own, as the role the source is reached with (which must own the tables to publish
them, and have `REPLICATION` to create the slot).
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from etl_assets.lib.errors import ExtractError
from etl_assets.lib.postgres.session import ConnectionSettings
from etl_assets.lib.postgres.wal import WatchedTable


def _connect(settings: ConnectionSettings, purpose: str) -> psycopg.Connection[tuple[object, ...]]:
    extra: dict[str, str | int] = {
        "application_name": f"etl-assets {purpose}"[:63],
        "connect_timeout": settings.connect_timeout_s,
    }
    if settings.password:
        extra["password"] = settings.password
    try:
        return psycopg.connect(make_conninfo(settings.conninfo, **extra), autocommit=True)
    except psycopg.Error as error:
        message = settings.redact(str(error))
        raise ExtractError(f"cannot connect to {settings.describe()}: {message}") from None


def setup_wal(
    settings: ConnectionSettings, slot: str, publication: str, tables: Sequence[WatchedTable]
) -> list[str]:
    """Make the publication hold exactly `tables`, then create the slot if it is missing.

    The publication names a partitioned table's changes by the table itself
    (`publish_via_partition_root`). It exists before the slot, so the slot's first change can
    be decoded. Returns what was done, one line each.
    """
    if not tables:
        raise ValueError("no table of this source is declared with `incremental: {mode: wal}`")
    names = sql.SQL(", ").join(t.relation.identifier() for t in tables)
    done: list[str] = []
    try:
        with _connect(settings, "wal setup") as connection:
            exists = connection.execute(
                "SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = %s)", (publication,)
            ).fetchone()
            if exists and exists[0]:
                connection.execute(
                    sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(
                        sql.Identifier(publication), names
                    )
                )
                connection.execute(
                    sql.SQL("ALTER PUBLICATION {} SET (publish_via_partition_root = true)").format(
                        sql.Identifier(publication)
                    )
                )
                done.append(f"publication {publication} now holds {_listed(tables)}")
            else:
                connection.execute(
                    sql.SQL(
                        "CREATE PUBLICATION {} FOR TABLE {}"
                        " WITH (publish_via_partition_root = true)"
                    ).format(sql.Identifier(publication), names)
                )
                done.append(f"created publication {publication} for {_listed(tables)}")
            slot_exists = connection.execute(
                "SELECT plugin FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            if slot_exists is None:
                connection.execute(
                    "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,)
                )
                done.append(f"created logical replication slot {slot} (pgoutput)")
            elif slot_exists[0] != "pgoutput":
                raise ExtractError(
                    f"slot {slot} exists with plugin {slot_exists[0]!r}, not pgoutput: drop it "
                    "(`etl-assets wal drop`) or name another slot in the source's `wal` settings"
                )
            else:
                done.append(f"slot {slot} exists already")
    except psycopg.Error as error:
        raise ExtractError(f"wal setup on {settings.describe()}: {error}") from None
    return done


def drop_wal(settings: ConnectionSettings, slot: str, publication: str) -> list[str]:
    """Drop the slot (freeing the WAL it keeps) and the publication, those that exist."""
    done: list[str] = []
    try:
        with _connect(settings, "wal drop") as connection:
            dropped = connection.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = %s",
                (slot,),
            ).fetchall()
            done.append(f"dropped slot {slot}" if dropped else f"no slot {slot}")
            exists = connection.execute(
                "SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = %s)", (publication,)
            ).fetchone()
            if exists and exists[0]:
                connection.execute(
                    sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(publication))
                )
                done.append(f"dropped publication {publication}")
            else:
                done.append(f"no publication {publication}")
    except psycopg.Error as error:
        raise ExtractError(f"wal drop on {settings.describe()}: {error}") from None
    return done


def _listed(tables: Sequence[WatchedTable]) -> str:
    return ", ".join(f"{t.schema}.{t.table}" for t in tables)
