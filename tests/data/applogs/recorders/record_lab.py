"""Record java_trace.log and python_chained.log: real traces of sessions a lab server terminated.

Run from the repository with the project's venv (compile App.java first, with pgJDBC's jar):
    javac -cp postgresql-42.7.13.jar -d /tmp/app tests/data/applogs/recorders/App.java
    .venv/bin/python tests/data/applogs/recorders/record_lab.py /tmp/app postgresql-42.7.13.jar OUT_DIR
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from playbook.lab.server import APP_ROLE, LAB_DATABASE, SUPERUSER, LabServer


class UserNotLoaded(Exception):  # no Error suffix: the reader must still end the traceback on it
    pass


def gone(admin: psycopg.Connection, pid: int) -> None:
    """Wait (10 s at most) until the terminated backend has left pg_stat_activity."""
    deadline = time.monotonic() + 10
    while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone() != (0,):
        if time.monotonic() > deadline:
            raise TimeoutError(f"backend {pid} still there")
        time.sleep(0.05)


def main(classes: str, jar: str, out: Path) -> None:
    lab = LabServer(Path(tempfile.mkdtemp()) / "lab")
    lab.up()
    try:
        admin = psycopg.connect(lab.dsn(SUPERUSER, "postgres"), autocommit=True)
        password = lab.passfile.read_text().strip().split(":")[4]
        url = f"jdbc:postgresql://127.0.0.1:{lab.port}/{LAB_DATABASE}"
        java = subprocess.Popen(
            ["java", "-cp", f"{jar}:{classes}", "App", url, APP_ROLE, password],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert java.stderr is not None
        pid = int(java.stderr.readline().split()[1])
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        gone(admin, pid)
        trace, _ = java.communicate("\n", timeout=60)
        (out / "java_trace.log").write_text(trace)

        buf = io.StringIO()
        handler = logging.StreamHandler(buf)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s"))
        log = logging.getLogger("app.api")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        conn = psycopg.connect(lab.dsn(user=APP_ROLE), autocommit=True)
        admin.execute("SELECT pg_terminate_backend(%s)", [conn.info.backend_pid])
        gone(admin, conn.info.backend_pid)

        def load_user(user_id: int) -> object:
            try:
                return conn.execute("SELECT %s", [user_id]).fetchone()
            except psycopg.OperationalError as exc:
                raise UserNotLoaded(f"could not load user {user_id}") from exc

        def audit(user_id: int) -> None:
            try:
                load_user(user_id)
            except UserNotLoaded:
                conn.execute("INSERT INTO audit VALUES (%s)", [user_id])  # the session is gone too

        try:
            load_user(7)
        except UserNotLoaded:
            log.exception("unhandled error on GET /users/7")
        try:
            audit(8)
        except psycopg.Error:
            log.exception("unhandled error on POST /audit/8")
        (out / "python_chained.log").write_text(buf.getvalue())
    finally:
        lab.destroy()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
