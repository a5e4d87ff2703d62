"""Reading which rows changed from a logical replication slot, in `pgoutput`'s messages.

The slot is read through SQL (`pg_logical_slot_peek_binary_changes`), so no replication
connection is needed, only a role with the `REPLICATION` attribute. Each message is decoded
here, in the format of protocol version 1 (the one every Postgres from 10 on speaks): a
transaction's `Begin`, a `Relation` describing each table before its first row, the rows
inserted, updated and deleted (with the old row's replica identity), `Truncate`, and `Commit`.
Values arrive as the text output of their type. Only what says which windows a change
touches is kept: the table, and the partition column's old and new values.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo

from psycopg import sql

from etl_assets.lib.errors import ExtractError
from etl_assets.lib.postgres import sql as q
from etl_assets.lib.postgres.session import Snapshot
from etl_assets.lib.postgres.sql import BoundKind, Relation
from etl_assets.lib.table.windows import Grain


class ChangeKind(StrEnum):
    """What happened to a row (or, for a truncate, to every row of a table)."""

    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    TRUNCATE = "truncate"


Row = tuple[str | None, ...]
"""A row's values as the text output of their types (None for NULL)."""


@dataclass(frozen=True)
class WalRelation:
    """A table as a `Relation` message describes it."""

    oid: int
    schema: str
    table: str
    columns: tuple[str, ...]
    replica_identity: str
    """`d` (primary key), `f` (full row), `i` (an index), `n` (nothing)."""


@dataclass(frozen=True)
class WalChange:
    """One changed row (or a truncated table), in the transaction that committed it."""

    kind: ChangeKind
    relation: WalRelation
    old: Row | None
    """The old row's values as text, where the replica identity sends them (else None)."""
    new: Row | None
    commit_end_lsn: int
    """Where the committing transaction's record ends: the slot can move past it once the
    change has been acted on."""

    def value(self, column: str, row: Row | None) -> str | None:
        """The text value of `column` in `row` (None when absent or NULL)."""
        if row is None or column not in self.relation.columns:
            return None
        return row[self.relation.columns.index(column)]


UNCHANGED_TOAST = "\x00unchanged-toast"
"""Stands for a value the message leaves out because it is stored out of line and unchanged."""


class _Reader:
    """Reads the big-endian fields of one message."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def byte(self) -> str:
        value = self._data[self._at : self._at + 1].decode("ascii")
        self._at += 1
        return value

    def int8(self) -> int:
        return self._number(">b")

    def int16(self) -> int:
        return self._number(">h")

    def int32(self) -> int:
        return self._number(">i")

    def uint32(self) -> int:
        return self._number(">I")

    def int64(self) -> int:
        return self._number(">q")

    def _number(self, layout: str) -> int:
        (value,) = struct.unpack_from(layout, self._data, self._at)
        self._at += struct.calcsize(layout)
        return int(value)

    def string(self) -> str:
        end = self._data.index(b"\x00", self._at)
        value = self._data[self._at : end].decode("utf-8")
        self._at = end + 1
        return value

    def raw(self, length: int) -> bytes:
        value = self._data[self._at : self._at + length]
        self._at += length
        return value

    def tuple_data(self) -> Row:
        values: list[str | None] = []
        for _ in range(self.int16()):
            kind = self.byte()
            if kind == "n":
                values.append(None)
            elif kind == "u":
                values.append(UNCHANGED_TOAST)
            elif kind in ("t", "b"):
                values.append(self.raw(self.int32()).decode("utf-8", errors="replace"))
            else:
                raise ExtractError(f"pgoutput: unknown column kind {kind!r} in a row")
        return tuple(values)


def decode_pgoutput(messages: Iterable[bytes]) -> Iterator[WalChange]:
    """The row changes in a slot's `pgoutput` messages, in order, each with its commit.

    A transaction's changes are yielded once its `Commit` has been read; an incomplete
    transaction at the end of `messages` yields nothing.
    """
    relations: dict[int, WalRelation] = {}
    pending: list[tuple[ChangeKind, WalRelation, Row | None, Row | None]] = []
    for data in messages:
        reader = _Reader(data)
        tag = reader.byte()
        if tag == "B":
            pending = []
        elif tag == "C":
            end = _commit_end(reader)
            for kind, relation, old, new in pending:
                yield WalChange(kind, relation, old, new, end)
            pending = []
        elif tag == "R":
            oid = reader.uint32()
            schema = reader.string() or "pg_catalog"
            table = reader.string()
            identity = chr(reader.int8())
            columns: list[str] = []
            for _ in range(reader.int16()):
                reader.int8()  # flags: part of the replica identity
                columns.append(reader.string())
                reader.uint32()  # type oid
                reader.int32()  # type modifier
            relations[oid] = WalRelation(oid, schema, table, tuple(columns), identity)
        elif tag in ("I", "U", "D"):
            relation = _relation(relations, reader.uint32())
            old: Row | None = None
            new: Row | None = None
            marker = reader.byte()
            if marker in ("K", "O"):
                old = reader.tuple_data()
                marker = reader.byte() if tag == "U" else ""
            if marker == "N":
                new = reader.tuple_data()
            kind = {"I": ChangeKind.INSERT, "U": ChangeKind.UPDATE, "D": ChangeKind.DELETE}[tag]
            pending.append((kind, relation, old, new))
        elif tag == "T":
            count = reader.int32()
            reader.int8()  # options: CASCADE, RESTART IDENTITY
            for _ in range(count):
                pending.append(
                    (ChangeKind.TRUNCATE, _relation(relations, reader.uint32()), None, None)
                )
        # Type ("Y"), Origin ("O") and logical messages ("M") say nothing about windows.


def _commit_end(reader: _Reader) -> int:
    """From a `Commit` message past its tag: where the committing transaction's record ends."""
    reader.int8()  # flags
    reader.int64()  # the commit record's LSN
    return reader.int64()


def _relation(relations: dict[int, WalRelation], oid: int) -> WalRelation:
    try:
        return relations[oid]
    except KeyError:
        raise ExtractError(
            f"pgoutput: a row of relation {oid} came before its description"
        ) from None


def local_window_start(
    text: str | None, kind: BoundKind, timezone: str, grain: Grain
) -> dt.datetime | None:
    """The local start (naive, in `timezone`) of the window a partition value falls in.

    `text` is the value's text output in a session with `TimeZone = 'UTC'` and ISO dates.
    None for NULL, ±infinity and dates no partition holds (BC, or past year 9999).
    """
    if text is None or text == UNCHANGED_TOAST or text in ("infinity", "-infinity"):
        return None
    if text.endswith(" BC"):
        return None
    try:
        if kind is BoundKind.DATE:
            local = dt.datetime.combine(dt.date.fromisoformat(text), dt.time())
        elif kind is BoundKind.TIMESTAMP:
            local = dt.datetime.fromisoformat(text)
        else:
            moment = dt.datetime.fromisoformat(text)
            local = moment.astimezone(ZoneInfo(timezone)).replace(tzinfo=None)
    except ValueError:
        return None  # a year past 9999: no partition holds it
    return truncate_local(local, grain)


def truncate_local(local: dt.datetime, grain: Grain) -> dt.datetime:
    """`date_trunc` of a local wall-clock time to the grain (weeks start on Monday)."""
    if grain is Grain.HOURLY:
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if grain is Grain.DAILY:
        return day
    if grain is Grain.WEEKLY:
        return day - dt.timedelta(days=day.weekday())
    return day.replace(day=1)


def lsn_text(lsn: int) -> str:
    """An LSN as Postgres writes it (`16/B374D848`)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """An LSN from Postgres' text form."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


@dataclass(frozen=True)
class WatchedTable:
    """A table whose changes a slot is read for, and the column that places a row in time."""

    schema: str
    table: str
    partition_column: str

    @property
    def relation(self) -> Relation:
        """The table as a relation."""
        return Relation(self.schema, self.table)


@dataclass(frozen=True)
class SlotState:
    """Where a slot stands: how far it was confirmed, and how much WAL it keeps on disk."""

    plugin: str
    confirmed_flush_lsn: int
    retained_bytes: int
    """WAL the server keeps for the slot: from its restart point to the server's current LSN."""
    pending_bytes: int
    """WAL written since the slot's confirmed position: what reading the slot has still to
    cover. Retained WAL beyond it is held by a transaction that was open at that position."""
    current_lsn: int
    """The server's current WAL position when this was read."""


def read_readiness(snapshot: Snapshot, publication: str) -> tuple[str, bool, bool, bool]:
    """What the server and the publication allow.

    `wal_level`, whether the role may read slots, whether the publication exists, and whether
    it publishes partitioned tables under their own names.
    """
    rows = snapshot.query(
        q.render(
            sql.SQL(
                "SELECT current_setting('wal_level'),"
                " (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user),"
                " EXISTS (SELECT FROM pg_publication WHERE pubname = {publication}),"
                " coalesce((SELECT pubviaroot FROM pg_publication"
                "  WHERE pubname = {publication}), false)"
            ).format(publication=sql.Literal(publication))
        )
    )
    level, replication, published, via_root = rows[0]
    return str(level), bool(replication), bool(published), bool(via_root)


def wal_problems(snapshot: Snapshot, publication: str, tables: Sequence[WatchedTable]) -> list[str]:
    """What stops the slot from saying which windows changed, each naming its fix.

    Empty when `wal_level` is logical, the role has `REPLICATION`, the publication exists and
    holds every table (a partitioned one under its own name), and each table's replica identity
    carries its partition column (a delete's old row must say which window it was in).
    """
    level, replication, published, via_root = read_readiness(snapshot, publication)
    problems: list[str] = []
    if level != "logical":
        problems.append(
            f"wal_level is {level!r}: set wal_level = logical and restart the server (on RDS "
            "and Aurora: rds.logical_replication = 1; Cloud SQL: cloudsql.logical_decoding = on; "
            "Azure: wal_level = logical)"
        )
    if not replication:
        problems.append(
            "the role cannot read replication slots: ALTER ROLE <role> WITH REPLICATION (on RDS: "
            "GRANT rds_replication TO <role>)"
        )
    if not published:
        problems.append(
            f"publication {publication!r} does not exist: run `etl-assets wal setup` or "
            f"CREATE PUBLICATION {publication} FOR TABLE ... WITH (publish_via_partition_root)"
        )
    partitioned = False
    for table in tables:
        table_problems, is_partitioned = _table_problems(
            snapshot, publication, table, check_membership=published
        )
        problems += table_problems
        partitioned = partitioned or is_partitioned
    if published and partitioned and not via_root:
        problems.append(
            f"publication {publication!r} publishes a partitioned table's changes under its "
            "partitions' names: ALTER PUBLICATION "
            f"{publication} SET (publish_via_partition_root = true)"
        )
    return problems


def _table_problems(
    snapshot: Snapshot, publication: str, table: WatchedTable, *, check_membership: bool
) -> tuple[list[str], bool]:
    """The table's own problems, and whether it is partitioned."""
    name = f"{table.schema}.{table.table}"
    rows = snapshot.query(
        q.render(
            sql.SQL(
                "SELECT c.relname::text, c.relreplident::text, c.relkind::text,"
                " coalesce((SELECT bool_or(a.attname = {column})"
                "  FROM pg_index i JOIN pg_attribute a"
                "  ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)"
                "  WHERE i.indrelid = c.oid AND CASE c.relreplident WHEN 'd' THEN i.indisprimary"
                "  ELSE i.indisreplident END), false),"
                # Joined by name: casting a name to regclass would look up every published
                # table's schema, and a role without USAGE on one (pg_toast) would be refused.
                " EXISTS (SELECT FROM pg_publication_tables p"
                "  JOIN pg_namespace pn ON pn.nspname = p.schemaname"
                "  JOIN pg_class pc ON pc.relnamespace = pn.oid AND pc.relname = p.tablename"
                "  WHERE p.pubname = {publication} AND pc.oid IN (SELECT {relation}::regclass"
                "   UNION ALL SELECT relid FROM pg_partition_tree({relation}::regclass)))"
                " FROM pg_class c WHERE c.oid = {relation}::regclass OR c.oid IN"
                " (SELECT relid FROM pg_partition_tree({relation}::regclass) WHERE isleaf)"
                " ORDER BY c.oid <> {relation}::regclass, c.relname"
            ).format(
                column=sql.Literal(table.partition_column),
                publication=sql.Literal(publication),
                relation=sql.Literal(table.relation.identifier().as_string()),
            )
        )
    )
    problems: list[str] = []
    if check_membership and rows and not rows[0][4]:
        problems.append(
            f"{name} is not in publication {publication!r}: ALTER PUBLICATION {publication} "
            f"ADD TABLE {name}"
        )
    for relname, identity, relkind, carries, _ in rows:
        if relkind == "p":
            continue  # a partitioned parent holds no rows: its leaves' identities count
        if identity == "f" or (identity in ("d", "i") and carries):
            continue
        leaf = f"{table.schema}.{relname}"
        problems.append(
            f"{leaf}'s replica identity does not carry {table.partition_column!r}, so a "
            "deleted row cannot say which window it was in: ALTER TABLE "
            f"{leaf} REPLICA IDENTITY FULL (or USING INDEX an index including it)"
        )
    return problems, bool(rows) and rows[0][2] == "p"


def slot_state(snapshot: Snapshot, slot: str) -> SlotState | None:
    """The slot's plugin, confirmed position and retained WAL; None if there is no such slot."""
    rows = snapshot.query(
        q.render(
            sql.SQL(
                "SELECT plugin::text, coalesce(confirmed_flush_lsn, '0/0')::text,"
                " pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8,"
                " pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8,"
                " pg_current_wal_lsn()::text"
                " FROM pg_replication_slots WHERE slot_name = {}"
            ).format(sql.Literal(slot))
        )
    )
    if not rows:
        return None
    plugin, confirmed, retained, pending, current = rows[0]
    return SlotState(
        str(plugin),
        parse_lsn(str(confirmed)),
        int(retained or 0),
        int(pending or 0),
        parse_lsn(str(current)),
    )


def peek_changes(
    snapshot: Snapshot,
    slot: str,
    publication: str,
    *,
    upto_lsn: int | None = None,
    upto_changes: int | None = None,
) -> Iterator[bytes]:
    """The slot's messages past its confirmed position, without consuming them.

    Whole transactions only: the server stops after the transaction in which `upto_changes`
    was reached, or at the first commit past `upto_lsn`. The messages stream in batches, so a
    transaction of millions of rows is read in bounded memory; nothing else may run on the
    session until they have all been read.
    """
    statement = q.render(
        sql.SQL(
            "SELECT data FROM pg_logical_slot_peek_binary_changes({slot}, {lsn}, {changes},"
            " 'proto_version', '1', 'publication_names', {publication})"
        ).format(
            slot=sql.Literal(slot),
            lsn=sql.SQL("NULL") if upto_lsn is None else sql.Literal(lsn_text(upto_lsn)),
            changes=sql.Literal(upto_changes),
            publication=sql.Literal(publication),
        )
    )
    for batch in snapshot.stream(statement):
        for data in batch.column(0).to_pylist():
            if data is not None:  # the column is NOT NULL; this only narrows its type
                yield bytes(data)


class MessageTally:
    """Counts the messages passing through it, and notes the end of the last commit among them."""

    def __init__(self, messages: Iterable[bytes]) -> None:
        self._messages = messages
        self.count = 0
        self.last_commit_end: int | None = None
        """The end LSN of the last transaction whose `Commit` passed (None if none)."""

    def __iter__(self) -> Iterator[bytes]:
        """The messages, unchanged."""
        for data in self._messages:
            self.count += 1
            if data[:1] == b"C":
                reader = _Reader(data)
                reader.byte()
                self.last_commit_end = _commit_end(reader)
            yield data


@dataclass(frozen=True)
class SourcePosition:
    """Where the server's WAL stands, and its clock, at one moment."""

    flushed: int
    """The LSN up to which the WAL is on disk: a slot can be read up to there."""
    now: dt.datetime


def source_position(snapshot: Snapshot) -> SourcePosition:
    """The server's flushed WAL position and its clock."""
    flushed, now = snapshot.query("SELECT pg_current_wal_flush_lsn()::text, statement_timestamp()")[
        0
    ]
    return SourcePosition(parse_lsn(str(flushed)), now)


def open_transactions(snapshot: Snapshot) -> tuple[int, ...]:
    """The transactions in progress when the session's snapshot was taken."""
    rows = snapshot.query(
        "SELECT xid::text::int8 FROM pg_snapshot_xip(pg_current_snapshot()) AS xid ORDER BY 1"
    )
    return tuple(int(xid) for (xid,) in rows)


def still_open(snapshot: Snapshot, transactions: Sequence[int]) -> tuple[int, ...]:
    """Those of `transactions` that have neither committed nor aborted yet."""
    if not transactions:
        return ()
    rows = snapshot.query(
        q.render(
            sql.SQL(
                "SELECT xid FROM unnest(ARRAY[{}]::int8[]) AS xid"
                " WHERE pg_xact_status(xid::text::xid8) = 'in progress' ORDER BY 1"
            ).format(sql.SQL(", ").join(sql.Literal(x) for x in transactions))
        )
    )
    return tuple(int(xid) for (xid,) in rows)


def advance_slot(snapshot: Snapshot, slot: str, lsn: int) -> None:
    """Move the slot's confirmed position to `lsn`, letting the server free the WAL before it.

    Only once whatever the changes up to `lsn` asked for is safely recorded elsewhere.
    """
    snapshot.query(
        q.render(
            sql.SQL("SELECT end_lsn::text FROM pg_replication_slot_advance({}, {})").format(
                sql.Literal(slot), sql.Literal(lsn_text(lsn))
            )
        )
    )
