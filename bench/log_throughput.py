"""Throughput of `playbook logs` against pgBadger on the same connection-heavy stderr log.

Generates a realistic ~100 MB PostgreSQL stderr log (Debian's prefix '%m [%p] %q%u@%d ', the
connection received / authenticated / authorized / disconnection lines that dominate pooled
workloads, some ERROR/FATAL lines with DETAIL and STATEMENT lines, tab continuations and a few
invalid UTF-8 bytes), then times both tools on one core and prints MB/s and the ratio.

    .venv/bin/python bench/log_throughput.py [--mb 100] [--keep PATH]

It prints figures; it is not a test and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

PREFIX = "%m [%p] %q%u@%d "

USERS = [("app_rw", "orders"), ("app_ro", "orders"), ("reporting", "warehouse"), ("billing", "billing")]
APPS = ["orders-api", "orders-worker", "metabase", "billing-cron", "psql", "PostgreSQL JDBC Driver"]

# (level, message, extra lines after it) for the rare lines mixed into the session traffic
RARE: list[tuple[str, str, list[str]]] = [
    ("FATAL", "terminating connection due to idle-session timeout", []),
    ("FATAL", "terminating connection due to idle-in-transaction timeout", []),
    ("FATAL", "terminating connection due to administrator command", []),
    ("ERROR", "canceling statement due to statement timeout", ["STATEMENT:  select pg_sleep(30)"]),
    ("ERROR", "canceling statement due to lock timeout", ["STATEMENT:  update orders set state = 'x'"]),
    ("LOG", "could not receive data from client: Connection reset by peer", []),
    ("LOG", "unexpected EOF on client connection with an open transaction", []),
    ("FATAL", "sorry, too many clients already", []),
    (
        "FATAL",
        'password authentication failed for user "app_rw"',
        [
            'DETAIL:  Connection matched file "/etc/postgresql/16/main/pg_hba.conf" line 122: '
            '"host all all 0.0.0.0/0 scram-sha-256"'
        ],
    ),
    (
        "ERROR",
        'duplicate key value violates unique constraint "orders_pkey"',
        [
            "DETAIL:  Key (id)=(42) already exists.",
            "STATEMENT:  insert into orders (id, state)\n\tvalues (42, 'new')",
        ],
    ),
    ("LOG", "checkpoint starting: time", []),
]


def generate(path: Path, target_mb: float, seed: int = 7) -> int:
    """Write the log; returns its size in bytes."""
    rng = random.Random(seed)
    t = datetime(2025, 3, 1, 0, 0, 0, tzinfo=timezone.utc)
    target = int(target_mb * 1024 * 1024)
    written = 0
    pid = 20000
    open_sessions: list[tuple[int, str, str, datetime]] = []
    chunk: list[str] = []
    with path.open("wb") as out:
        while written < target:
            t += timedelta(microseconds=rng.randint(200, 4000))
            stamp = t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d} UTC"
            roll = rng.random()
            if roll < 0.40 or not open_sessions:
                pid += rng.randint(1, 7)
                if pid > 4_000_000:
                    pid = 20000
                user, db = rng.choice(USERS)
                app = rng.choice(APPS)
                port = rng.randint(30000, 60000)
                host = f"10.0.{rng.randint(0, 9)}.{rng.randint(1, 250)}"
                chunk.append(
                    f"{stamp} [{pid}] [unknown]@[unknown] LOG:  connection received: "
                    f"host={host} port={port}\n"
                )
                chunk.append(
                    f'{stamp} [{pid}] {user}@{db} LOG:  connection authenticated: identity="{user}" '
                    f"method=scram-sha-256 (/etc/postgresql/16/main/pg_hba.conf:122)\n"
                )
                chunk.append(
                    f"{stamp} [{pid}] {user}@{db} LOG:  connection authorized: user={user} database={db} "
                    f"application_name={app}\n"
                )
                open_sessions.append((pid, user, db, t))
                if len(open_sessions) > 200:
                    rng.shuffle(open_sessions)
            elif roll < 0.985:
                spid, user, db, start = open_sessions.pop()
                dur = t - start
                secs = dur.total_seconds()
                hh, rem = divmod(secs, 3600)
                mm, ss = divmod(rem, 60)
                chunk.append(
                    f"{stamp} [{spid}] {user}@{db} LOG:  disconnection: session time: "
                    f"{int(hh)}:{int(mm):02d}:{ss:06.3f} user={user} database={db} "
                    f"host=10.0.{spid % 10}.{spid % 250 + 1} port={30000 + spid % 30000}\n"
                )
            else:
                spid, user, db, _ = rng.choice(open_sessions)
                level, message, extra = rng.choice(RARE)
                who = "" if message.startswith("checkpoint") else f"{user}@{db} "
                shown_pid = 1000 if not who else spid
                chunk.append(f"{stamp} [{shown_pid}] {who}{level}:  {message}\n")
                for line in extra:
                    chunk.append(f"{stamp} [{shown_pid}] {who}{line}\n")
            if len(chunk) >= 20000:
                data = "".join(chunk).encode()
                # a few invalid bytes, as a latin-1 client encoding leaves them in application names
                data = data.replace(b"application_name=psql", b"application_name=psql-\xe9t\xe9", 3)
                out.write(data)
                written += len(data)
                chunk = []
        if chunk:
            data = "".join(chunk).encode()
            out.write(data)
            written += len(data)
    return written


def _peak_mb(before: int) -> float:
    """Peak RSS of the largest child waited for since `before` (Linux reports KB)."""
    return max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024


def time_ours(path: Path) -> tuple[float, str]:
    code = (
        "import argparse, sys; from playbook import logs_command as m; p = argparse.ArgumentParser(); "
        "m.add_arguments(p); sys.exit(m.run(p.parse_args(sys.argv[1:])))"
    )
    cmd = [sys.executable, "-c", code, str(path), "--prefix", PREFIX, "--json"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"playbook logs failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return elapsed, done.stdout


def time_pgbadger(path: Path, outdir: Path) -> float | None:
    exe = shutil.which("pgbadger")
    if exe is None:
        return None
    cmd = [
        exe,
        "-j",
        "1",
        "-f",
        "stderr",
        "--prefix",
        PREFIX,
        "-q",
        # a pid folder of its own: a second pgBadger on the machine would otherwise refuse to run
        "--pid-dir",
        str(outdir),
        "-o",
        str(outdir / "out.html"),
        str(path),
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        print(f"pgbadger failed ({done.returncode}): {done.stderr.strip()[-300:]}")
        return None
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100.0, help="size of the generated log in MB")
    parser.add_argument("--keep", type=Path, help="write the log here and keep it")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="log-bench-") as tmp:
        path = args.keep or Path(tmp, "postgresql.log")
        t0 = time.perf_counter()
        size = generate(path, args.mb)
        mb = size / 1e6
        print(f"generated {mb:.1f} MB in {time.perf_counter() - t0:.1f} s: {path}")
        print(f"cpu cores visible: {os.cpu_count()}; both tools run on one core")

        ours, out = time_ours(path)
        peak = _peak_mb(0)
        print(f"playbook logs : {ours:6.2f} s  {mb / ours:7.1f} MB/s  (peak RSS {peak:.0f} MB)")
        if '"lines"' in out:
            import json

            summary = json.loads(out)
            print(f"  lines={summary.get('lines')} sessions={summary.get('sessions', {}).get('count')}")

        badger = time_pgbadger(path, Path(tmp))
        if badger is None:
            print("pgbadger      : not installed (apt-get install -y pgbadger); ours only")
        else:
            version = subprocess.run(["pgbadger", "--version"], capture_output=True, text=True).stdout.strip()
            print(f"pgbadger -j 1 : {badger:6.2f} s  {mb / badger:7.1f} MB/s  ({version})")
            print(f"ratio         : playbook logs is {badger / ours:.1f}x pgBadger's throughput")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
