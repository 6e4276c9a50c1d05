"""The lab's PgBouncer: Debian's (or any) pgbouncer binary in front of a lab server.

`PgBouncer(base_dir, server, settings)` writes its own pgbouncer.ini, auth file, passfile, log,
pid file and unix socket into `base_dir`, and listens on a free TCP port on 127.0.0.1. Clients
authenticate with scram-sha-256 using the lab's password (the same one the lab server's roles
have), so a DSN it hands out carries no password: its passfile does. PgBouncer refuses to run as
root, so as root it runs as the lab's unprivileged `embedded_postgres` user, like the server.

`settings` are [pgbouncer] lines (client_idle_timeout, query_wait_timeout, pool_mode,
default_pool_size, max_client_conn, max_db_connections, …) laid over the lab's defaults;
`reload(settings)` rewrites the ini and sends SIGHUP, which is how an operator changes them.
The console (virtual database `pgbouncer`) admits the lab superuser as admin_users and the
playbook's monitor role as stats_users (SHOW only), which is what `playbook run --pgbouncer` needs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import psycopg

from playbook.errors import PlaybookError
from playbook.lab.server import (
    APP_ROLE,
    MONITOR_ROLE,
    SERVER_USER,
    SUPERUSER,
    LabServer,
    ensure_system_user,
    free_port,
)

CONSOLE_DB = "pgbouncer"
INSTALL_HINT = (
    "pgbouncer is not installed (looked for $PLAYBOOK_PGBOUNCER, pgbouncer on PATH and /usr/sbin/pgbouncer); "
    "`make install` run as root on Debian or Ubuntu installs it (apt-get install pgbouncer), "
    "elsewhere install your distribution's pgbouncer package"
)
# What the lab always sets; a scenario's settings override any of them.
DEFAULTS: dict[str, str | int | float] = {
    "pool_mode": "session",
    "default_pool_size": 10,
    "max_client_conn": 200,
    "auth_type": "scram-sha-256",
    "log_connections": 1,
    "log_disconnections": 1,
    "log_pooler_errors": 1,
    "stats_period": 60,
    "server_login_retry": 1,
    "ignore_startup_parameters": "extra_float_digits",
}


def find_pgbouncer() -> Path | None:
    """The pgbouncer binary: $PLAYBOOK_PGBOUNCER, else PATH, else /usr/sbin (not on a user's PATH)."""
    if env := os.environ.get("PLAYBOOK_PGBOUNCER"):
        return Path(env) if Path(env).is_file() else None
    found = shutil.which("pgbouncer")
    if found:
        return Path(found)
    debian = Path("/usr/sbin/pgbouncer")
    return debian if debian.is_file() else None


def pgbouncer_version(binary: Path) -> str:
    """'1.18.0' from `pgbouncer --version` (first line 'PgBouncer 1.18.0')."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"PgBouncer\s+(\d+\.\d+(?:\.\d+)?)", out)
    if not match:
        raise PlaybookError(f"cannot tell the PgBouncer version of {binary} from {out.strip()[:80]!r}")
    return match.group(1)


def _ini_value(value: str | int | float) -> str:
    return str(value)


class PgBouncer:
    """A PgBouncer the lab started and controls, in front of `server` (a running LabServer)."""

    def __init__(
        self,
        base_dir: Path,
        server: LabServer,
        settings: Mapping[str, str | int | float] | None = None,
        *,
        users: tuple[str, ...] = (SUPERUSER, MONITOR_ROLE, APP_ROLE),
        binary: Path | None = None,
    ) -> None:
        found = binary or find_pgbouncer()
        if found is None:
            raise PlaybookError(INSTALL_HINT)
        self.binary = Path(found)
        self.base_dir = Path(base_dir).absolute()
        self.server = server
        self.settings: dict[str, str | int | float] = dict(settings or {})
        self.users = users
        self.port = free_port()
        self.version = pgbouncer_version(self.binary)

    # -- paths ---------------------------------------------------------------------------------
    @property
    def ini(self) -> Path:
        return self.base_dir / "pgbouncer.ini"

    @property
    def auth_file(self) -> Path:
        return self.base_dir / "userlist.txt"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "pgbouncer.log"

    @property
    def pid_file(self) -> Path:
        return self.base_dir / "pgbouncer.pid"

    @property
    def passfile(self) -> Path:
        return self.base_dir / "pgpass"

    def dsn(self, user: str = APP_ROLE, dbname: str = "lab") -> str:
        """A DSN through PgBouncer, with no password in it (its passfile carries it)."""
        return (
            f"host=127.0.0.1 port={self.port} user={user} dbname={dbname} "
            f"passfile={self.passfile} sslmode=disable"
        )

    def console_dsn(self, user: str = MONITOR_ROLE) -> str:
        """The admin console (virtual database `pgbouncer`); the monitor role may only SHOW."""
        return self.dsn(user, CONSOLE_DB)

    # -- configuration ---------------------------------------------------------------------------
    def _password(self) -> str:
        state = json.loads(self.server.state_file.read_text())
        return str(state["password"])

    def _effective(self) -> dict[str, str | int | float]:
        base: dict[str, str | int | float] = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": str(self.base_dir),
            "auth_file": str(self.auth_file),
            "logfile": str(self.log_file),
            "pidfile": str(self.pid_file),
            "admin_users": SUPERUSER,
            "stats_users": MONITOR_ROLE,
            **DEFAULTS,
        }
        base.update(self.settings)
        return base

    def _write_config(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        server_port = self.server.port
        lines = [
            "; Written by pg-session-playbook's lab.",
            "[databases]",
            f"lab = host=127.0.0.1 port={server_port} dbname=lab",
            f"* = host=127.0.0.1 port={server_port}",
            "",
            "[pgbouncer]",
            *(f"{key} = {_ini_value(value)}" for key, value in self._effective().items()),
            "",
        ]
        self.ini.write_text("\n".join(lines))
        password = self._password().replace('"', '""')
        # Plain passwords: PgBouncer answers the client's SCRAM with them and logs in to the server with them.
        self.auth_file.write_text("".join(f'"{user}" "{password}"\n' for user in self.users))
        self.passfile.write_text(f"127.0.0.1:{self.port}:*:*:{self._password()}\n")
        for path in (self.ini, self.auth_file, self.passfile):
            path.chmod(0o600)
        if os.geteuid() == 0:
            self._prepare_root_mode()

    def _prepare_root_mode(self) -> None:
        """PgBouncer refuses root: its folder goes to the lab's unprivileged user, its parents traversable."""
        ensure_system_user()
        for parent in self.base_dir.parents:
            parent.chmod(parent.stat().st_mode | 0o011)  # search (x) only: nothing becomes readable
        for path in (self.base_dir, self.ini, self.auth_file):
            shutil.chown(path, SERVER_USER, SERVER_USER)
        # The passfile is the client's (root's) file, like ~/.pgpass; libpq wants it private to its reader.

    # -- life cycle ------------------------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, deadline_s: float = 20) -> PgBouncer:
        """Write the configuration, start the daemon and wait until the console answers."""
        if self.is_running():
            return self
        self._write_config()
        as_root = os.geteuid() == 0
        done = subprocess.run(
            [str(self.binary), "-d", str(self.ini)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd="/",
            user=SERVER_USER if as_root else None,
            group=SERVER_USER if as_root else None,
        )
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip() or self.log_tail()
            raise PlaybookError(f"pgbouncer did not start: {said or f'exit code {done.returncode}'}")
        self.wait_ready(deadline_s)
        return self

    def wait_ready(self, deadline_s: float = 20) -> None:
        end = time.monotonic() + deadline_s
        last: Exception | None = None
        while time.monotonic() < end:
            try:
                with psycopg.connect(
                    self.console_dsn(SUPERUSER), autocommit=True, connect_timeout=2, prepare_threshold=None
                ) as conn:
                    psycopg.ClientCursor(conn).execute("SHOW VERSION")
                    return
            except psycopg.OperationalError as exc:
                last = exc
                time.sleep(0.1)
        tail = self.log_tail()
        raise PlaybookError(f"pgbouncer did not accept connections within {deadline_s:.0f} s: {tail or last}")

    def log_tail(self, lines: int = 3) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""

    def reload(self, settings: Mapping[str, str | int | float] | None = None) -> None:
        """Lay `settings` over the current ones, rewrite the ini and SIGHUP (what RELOAD does)."""
        if settings:
            self.settings.update(settings)
        self._write_config()
        pid = self.pid()
        if pid is None:
            raise PlaybookError("pgbouncer is not running; start() it first")
        os.kill(pid, signal.SIGHUP)

    def stop(self, deadline_s: float = 10) -> None:
        """Immediate shutdown (the lab's clients are its own), then SIGKILL after the deadline."""
        pid = self.pid()
        if pid is None:
            return
        # 1.23 made SIGTERM a shutdown that waits for every client; SIGQUIT took over the immediate one.
        major_minor = tuple(int(part) for part in self.version.split(".")[:2])
        immediate = signal.SIGQUIT if major_minor >= (1, 23) else signal.SIGTERM
        for sig, wait_s in ((immediate, deadline_s), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            end = time.monotonic() + wait_s
            while time.monotonic() < end and self.pid() is not None:
                time.sleep(0.05)
            if self.pid() is None:
                return
        raise PlaybookError(f"pgbouncer (pid {pid}) did not stop")

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
