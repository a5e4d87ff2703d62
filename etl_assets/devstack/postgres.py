"""An embedded Postgres server for the demo, `make dev` and the tests.

It runs real server binaries: the ones shipped in the `pgserver` wheel (Postgres 16) by default,
or any installation named by `ETL_ASSETS_PG_BINDIR` (e.g. Debian's /usr/lib/postgresql/15/bin),
or the `pg_ctl` found on PATH. The server listens on 127.0.0.1 only, on a free port, with its
data in a directory of the caller's choosing; TCP logins need a password (scram-sha-256).
Postgres refuses to run as root, so under root the server runs as the `postgres` system user
(created if missing).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

BINDIR_ENV = "ETL_ASSETS_PG_BINDIR"
SERVICE_USER = "postgres"


def find_bindir() -> Path:
    """Directory holding `initdb`, `pg_ctl` and `postgres`."""
    configured = os.environ.get(BINDIR_ENV)
    if configured:
        return Path(configured)
    # Located without importing: importing pgserver starts its own server machinery.
    package = importlib.util.find_spec("pgserver")
    if package is not None and package.submodule_search_locations:
        bundled = Path(package.submodule_search_locations[0]) / "pginstall" / "bin"
        if (bundled / "pg_ctl").exists():
            return bundled
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    raise RuntimeError(
        f"no Postgres server binaries: install the devstack extra (pgserver), put pg_ctl on "
        f"PATH, or set {BINDIR_ENV}"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class ServerAddress:
    """How to reach a running server as its superuser."""

    host: str
    port: int
    user: str
    password: str

    def conninfo(self, dbname: str = "postgres", **extra: str | int) -> str:
        """Libpq keyword/value connection string for `dbname`."""
        return make_conninfo(
            "",
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=dbname,
            **extra,
        )

    def url(self, dbname: str, driver: str = "postgresql") -> str:
        """`driver://user:password@host:port/dbname` (for SQLAlchemy-style consumers)."""
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"


def external_server(conninfo: str) -> ServerAddress:
    """The address of a server someone else runs, from a superuser libpq connection string."""
    parts = conninfo_to_dict(conninfo)
    return ServerAddress(
        host=str(parts.get("host") or "127.0.0.1"),
        port=int(str(parts.get("port") or 5432)),
        user=str(parts.get("user") or "postgres"),
        password=str(parts.get("password") or ""),
    )


def create_database(address: ServerAddress, name: str) -> str:
    """Create database `name` (if missing); returns its superuser conninfo."""
    with psycopg.connect(address.conninfo(), autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if not exists:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return address.conninfo(name)


class EmbeddedPostgres:
    """A throwaway Postgres cluster in `base_dir`; use as a context manager."""

    def __init__(
        self, base_dir: Path, *, bindir: Path | None = None, port: int | None = None
    ) -> None:
        self.base_dir = base_dir
        self.bindir = bindir or find_bindir()
        self.data_dir = base_dir / "data"
        self.log_file = base_dir / "postgres.log"
        self.port = port or free_port()
        self.password = self._superuser_password()
        self._run_as = _service_user() if os.geteuid() == 0 else None
        # Unix socket paths are limited to ~107 bytes; keep the socket in a short temp dir.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="etl-pg-"))
        self.address = ServerAddress("127.0.0.1", self.port, "postgres", self.password)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, extra_settings: Sequence[str] = ()) -> None:
        """Initdb (once) and start the server; returns when it accepts connections."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        for directory in (self.base_dir, self._socket_dir):
            self._give_to_service_user(directory)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        settings = [
            "-h 127.0.0.1",
            f"-p {self.port}",
            f"-k {self._socket_dir}",
            # A disposable cluster: durability is not needed and costs seconds per test run.
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
            "-c max_connections=200",
            # Logical decoding, so a WAL sensor can read a slot of the source's changes.
            "-c wal_level=logical",
            *extra_settings,
        ]
        self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file), "-o", " ".join(settings))

    def stop(self) -> None:
        """Stop the server (fast shutdown); a server that is not running is left alone.

        Returns once the server has removed its pid file, whatever `pg_ctl` answered.
        """
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists():
            if self._run_as is not None:
                # Whatever changed a parent's mode since the start (pytest resets its base
                # temporary directory to 0700 on every session), `pg_ctl` must reach the data.
                _make_traversable(self.data_dir.parent)
            self._pg_ctl("stop", "-m", "fast", "-w", "-t", "60", check=False)
            if pid_file.exists():
                # `pg_ctl` could not ask it: SIGINT to the postmaster is the same fast shutdown.
                with contextlib.suppress(ValueError, OSError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
            deadline = time.monotonic() + 60
            while pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid_file.exists():
                raise RuntimeError(
                    f"Postgres in {self.data_dir} did not stop within 60 s:\n{self.log_tail()}"
                )
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """Create database `name` (if missing); returns its superuser conninfo."""
        return create_database(self.address, name)

    def _superuser_password(self) -> str:
        """A new random password, or the one of the cluster already in `base_dir`."""
        saved = self.base_dir / "superuser.password"
        if saved.exists() and (self.data_dir / "PG_VERSION").exists():
            return saved.read_text().strip()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(18)
        saved.write_text(password)
        saved.chmod(0o600)
        return password

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server log, for error messages."""
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def _initdb(self) -> None:
        password_file = self.base_dir / "initdb.pw"
        password_file.write_text(self.password)
        self._give_to_service_user(password_file)
        try:
            self._run(
                self.bindir / "initdb",
                "-D", str(self.data_dir),
                "-U", "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={password_file}",
                "--encoding=UTF8",
                "--locale=C",
            )  # fmt: skip
        finally:
            password_file.unlink(missing_ok=True)

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        self._run(self.bindir / "pg_ctl", "-D", str(self.data_dir), *args, check=check)

    def _run(self, program: Path, *args: str, check: bool = True) -> None:
        result = subprocess.run(  # noqa: S603 - fixed program, arguments built here
            [str(program), *args],
            capture_output=True,
            text=True,
            user=self._run_as.pw_uid if self._run_as else None,
            group=self._run_as.pw_gid if self._run_as else None,
            extra_groups=[] if self._run_as else None,
            cwd=self.base_dir,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{program.name} {args[0] if args else ''} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}\n{self.log_tail()}"
            )

    def _give_to_service_user(self, path: Path) -> None:
        if self._run_as is None:
            return
        os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)
        _make_traversable(path.parent)
        _make_traversable(self.bindir)


def _service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(  # noqa: S603 - fixed arguments
            ["/usr/sbin/useradd", "--system", "--no-create-home", SERVICE_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVICE_USER)


def _make_traversable(path: Path) -> None:
    """Let other users pass through `path` and its parents (x bit only), as a server needs."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)


@contextlib.contextmanager
def embedded_postgres(base_dir: Path) -> Generator[EmbeddedPostgres]:
    """Start a server in `base_dir` and stop it afterwards."""
    server = EmbeddedPostgres(base_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
