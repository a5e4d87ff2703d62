"""`etl-assets-devstack demo | dev`: the commands behind `make demo` and `make dev`."""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from etl_assets.cli.main import set_pool_limits
from etl_assets.components.postgres_tables import declared_pools, declared_tables
from etl_assets.devstack.demo import format_summary, launch_runs, summarize
from etl_assets.devstack.postgres import free_port
from etl_assets.devstack.stack import PROJECT_ROOT, DevStack, dev_stack

DEFAULT_STATE_DIR = PROJECT_ROOT / ".devstack"
DEFAULT_WORKSPACE = PROJECT_ROOT / "workspace.yaml"


def _say(message: str) -> None:
    print(message, flush=True)  # noqa: T201 - this is a command-line program


def demo(state_dir: Path) -> int:
    """Start the stack, launch the demo runs, check the lake, print the summary."""
    started = time.perf_counter()
    _say(f"starting embedded Postgres and S3 in {state_dir} ...")
    with dev_stack(state_dir) as stack:
        _say(f"  postgres on 127.0.0.1:{stack.postgres.port}, S3 endpoint {stack.s3.url}")
        # As on any new instance (`etl-assets pools --apply`): runs that start together would
        # otherwise race to create the same pool's default limit.
        set_pool_limits(declared_pools(), stack.process_environment())
        _say("launching runs (dg launch) ...")
        launch_runs(stack)
        _say("reading the lake back (pyarrow.dataset; Iceberg tables through their catalog) ...")
        rows = summarize(stack, declared_tables())
        _say("")
        _say(format_summary(rows))
        failed = [r for r in rows if not r.passed]
        _say("")
        _say(
            f"{len(rows)} partitions published, {len(rows) - len(failed)} equal to the source, "
            f"in {time.perf_counter() - started:.1f}s; state was in {state_dir} (reset on start)"
        )
        if not rows or failed:
            return 1
    return 0


def port_in_use(port: int) -> bool:
    """Whether something already listens on 127.0.0.1:`port`."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def dev(state_dir: Path, port: int, *, demo_runs: bool = True) -> int:
    """The demo stack plus the Dagster webserver and daemon, until Ctrl-C.

    `port` 0 takes a free port when the webserver starts (after the demo runs), and prints it.
    """
    if port and port_in_use(port):
        _say(f"port {port} is in use on 127.0.0.1: stop what listens there or pass --port")
        return 1
    with dev_stack(state_dir) as stack:
        pools = declared_pools()
        set_pool_limits(pools, stack.process_environment())
        _say(f"source pools: {', '.join(f'{p}={n}' for p, n in sorted(pools.items()))}")
        if demo_runs:
            _say("launching the demo runs so the lake has data to explore ...")
            launch_runs(stack)
        port = port or free_port()
        if port_in_use(port):
            _say(f"port {port} was taken on 127.0.0.1 while the demo ran: pass another --port")
            return 1
        processes = [start_webserver(stack, port), start_daemon(stack)]
        for sensor in stack.wal_sensors:
            _say(f"WAL sensor ready to turn on under Automation: {sensor}")
        _say(f"\nDagster UI: http://127.0.0.1:{port}  (Ctrl-C stops everything)")
        _say(f"environment for your own shell: source {state_dir / 'stack.env'}\n")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        ended: list[str] = []
        try:
            while not stop.is_set() and all(p.poll() is None for p in processes):
                stop.wait(1.0)
            ended = [
                f"the {name} exited with code {p.returncode}"
                for name, p in zip(("webserver", "daemon"), processes, strict=True)
                if not stop.is_set() and p.poll() is not None
            ]
        except KeyboardInterrupt:
            pass
        finally:
            stop_processes(processes)
        if ended:
            _say(f"{'; '.join(ended)} (its output is above); stopping the stack")
        _say("stopped the webserver, the daemon, S3 and Postgres")
    return 1 if ended else 0


def stop_processes(processes: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """Ask every process to stop, then kill those still running after `timeout` seconds."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()


def dagster_command(
    stack: DevStack, *arguments: str, log: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    """Start a Dagster program (webserver, daemon) on the stack's instance and workspace."""
    program, *rest = arguments
    return subprocess.Popen(  # noqa: S603 - our own executables and arguments
        [str(Path(sys.executable).parent / program), *rest],
        cwd=PROJECT_ROOT,
        env=stack.process_environment(),
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
    )


def start_webserver(
    stack: DevStack,
    port: int,
    log: IO[bytes] | None = None,
    workspace: Path = DEFAULT_WORKSPACE,
) -> subprocess.Popen[bytes]:
    """The Dagster UI on 127.0.0.1:`port`, loading `workspace` (the project's by default)."""
    return dagster_command(
        stack,
        "dagster-webserver",
        "-w",
        str(workspace),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        log=log,
    )


def start_daemon(
    stack: DevStack, log: IO[bytes] | None = None, workspace: Path = DEFAULT_WORKSPACE
) -> subprocess.Popen[bytes]:
    """The Dagster daemon (queued runs, sensors, schedules, backfills, run monitoring)."""
    return dagster_command(stack, "dagster-daemon", "run", "-w", str(workspace), log=log)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `etl-assets-devstack`."""
    parser = argparse.ArgumentParser(prog="etl-assets-devstack", description=__doc__)
    parser.add_argument("command", choices=["demo", "dev"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument(
        "--port", type=int, default=3000, help="webserver port (dev); 0 takes a free one"
    )
    parser.add_argument(
        "--no-demo-runs", action="store_true", help="dev: start with an empty lake and instance"
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.state_dir)
    return dev(args.state_dir, args.port, demo_runs=not args.no_demo_runs)


if __name__ == "__main__":
    sys.exit(main())
