"""`etl-assets wal`: the publication and logical replication slot behind each WAL sensor.

    etl-assets wal setup [--source NAME]    create the publication (or set its tables) and the
                                            slot, then say what else is missing
    etl-assets wal status [--source NAME]   the slot's position, retained and unread WAL against
                                            the limit, and what stops it from being read
    etl-assets wal drop [--source NAME]     drop the slot (freeing its WAL) and the publication

Each source whose tables declare `incremental: {mode: wal}` has one slot and one publication,
named in its `wal` settings. They are reached as the source's role (`dsn_env`,
`password_env`), or as another role given with `--dsn-env` and `--password-env`: creating a
publication takes the tables' owner, and a slot the `REPLICATION` attribute.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from etl_assets.cli.settings import env_settings
from etl_assets.components.postgres_tables import PostgresTablesComponent, declared_sources
from etl_assets.components.wal import MB, WalSource, describe_slot
from etl_assets.lib.errors import EtlAssetsError
from etl_assets.lib.postgres.session import ConnectionSettings, Snapshot
from etl_assets.lib.postgres.wal import slot_state, wal_problems
from etl_assets.lib.postgres.wal_admin import drop_wal, setup_wal

WAL_HELP = "set up, inspect or drop the slot and publication of each WAL sensor"


def add_wal_arguments(wal: argparse.ArgumentParser) -> None:
    """The arguments of `etl-assets wal`."""
    wal.add_argument("action", choices=["setup", "status", "drop"])
    wal.add_argument("--source", help="only this source (default: every source with wal tables)")
    wal.add_argument("--dsn-env", help="environment variable holding another role's libpq DSN")
    wal.add_argument("--password-env", help="environment variable holding that role's password")


def run_wal(
    args: argparse.Namespace,
    out: TextIO,
    sources: Sequence[PostgresTablesComponent] | None = None,
) -> int:
    """Run `etl-assets wal <action>` on each chosen source; 0 when every slot is ready."""
    found = [
        (component, wal)
        for component in (declared_sources() if sources is None else sources)
        if (wal := component.wal_source()) is not None
        and (args.source is None or component.source.name == args.source)
    ]
    if not found:
        which = f"source {args.source!r}" if args.source else "any declared source"
        print(  # noqa: T201
            f"etl-assets wal: no table of {which} is declared with `incremental: {{mode: wal}}`",
            file=sys.stderr,
        )
        return 2
    status = 0
    for component, wal in found:
        out.write(f"source {wal.source} (slot {wal.slot}, publication {wal.publication}):\n")
        try:
            settings = _settings(component, args.dsn_env, args.password_env)
            if args.action == "setup":
                for line in setup_wal(settings, wal.slot, wal.publication, wal.watched):
                    out.write(f"  {line}\n")
            elif args.action == "drop":
                for line in drop_wal(settings, wal.slot, wal.publication):
                    out.write(f"  {line}\n")
                continue
            problems = _status(settings, wal, out)
        except (EtlAssetsError, ValueError) as error:
            print(f"etl-assets wal {args.action}: {error}", file=sys.stderr)  # noqa: T201
            return 2
        if problems:
            status = 1
            for problem in problems:
                out.write(f"  missing: {problem}\n")
        else:
            out.write("  ready: the WAL sensor can read the slot\n")
    return status


def _status(settings: ConnectionSettings, wal: WalSource, out: TextIO) -> list[str]:
    with Snapshot(settings, "etl-assets wal status") as snapshot:
        problems = wal_problems(snapshot, wal.publication, wal.watched)
        state = slot_state(snapshot, wal.slot)
    if state is None:
        problems.append(f"slot {wal.slot} does not exist: run `etl-assets wal setup`")
    else:
        out.write(f"  {describe_slot(wal, state)}\n")
        if state.pending_bytes > wal.settings.max_unread_wal_mb * MB:
            out.write(
                "  past the limit: the sensor's next tick moves the slot to the present and "
                "reconciles every closed window instead of reading the changes\n"
            )
    return problems


def _settings(
    component: PostgresTablesComponent, dsn_env: str | None, password_env: str | None
) -> ConnectionSettings:
    """Another role's variables when given, else the source's declared ones."""
    if dsn_env:
        return env_settings(dsn_env, password_env)
    return env_settings(component.source.dsn_env, password_env or component.source.password_env)
