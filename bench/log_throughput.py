"""Throughput and peak memory of `playbook logs` against pgBadger -j 1 on the same generated logs.

The logs are the team's connection-heavy mix (/work/shared/bench/genlog.py, prefix
'%m [%p] %q%u@%d '): 100 MB and 500 MB in stderr, plus csvlog and jsonlog copies of the 100 MB
one (converted here, record by record, with the SQLSTATEs PostgreSQL writes). Missing files are
generated; existing ones are reused, so a second run times the same bytes.

Every tool runs in a child process of its own, one at a time: our MB/s is the log's size over
the child's wall time, "per core" is the size over its CPU time (user + system), and the peak
RSS is the child's own (getrusage of that child, via os.wait4). pgBadger gets a pid folder of
its own (--pid-dir) and -j 1.

    .venv/bin/python bench/log_throughput.py [--dir /tmp/wt-logspeed-bench] [--sizes 100,500]
        [--genlog /work/shared/bench/genlog.py] [--jobs 1] [--no-pgbadger]

It prints figures; it is not a test and asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

PREFIX = "%m [%p] %q%u@%d "
GENLOG = Path("/work/shared/bench/genlog.py")

# -- the pooled mix the tests read (sessions that pair), kept for tests/test_serverlog.py --------

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


# -- the team's mix in csvlog and jsonlog --------------------------------------------------------

_LINE = re.compile(
    r"^(\S+ \S+ \S+) \[(\d+)\] (\S*)@(\S*) (LOG|FATAL|ERROR|PANIC|WARNING|STATEMENT|DETAIL|HINT):  (.*)$"
)
# SQLSTATEs PostgreSQL writes with these wordings (csvlog and jsonlog carry them in a field)
_STATES = {
    "terminating connection due to idle-session timeout": "57P05",
    "terminating connection due to idle-in-transaction timeout": "25P03",
    "terminating connection due to administrator command": "57P01",
    "sorry, too many clients already": "53300",
    "canceling statement due to statement timeout": "57014",
    "could not receive data from client: Connection reset by peer": "08006",
    "unexpected EOF on client connection with an open transaction": "08P01",
    "could not send data to client: Broken pipe": "08006",
}


def _records(stderr_log: Path) -> Iterator[dict[str, Any]]:
    """The entries of a genlog stderr log as csvlog/jsonlog records (STATEMENT lines joined)."""
    pending: dict[str, Any] | None = None
    with stderr_log.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            match = _LINE.match(line.rstrip("\n"))
            if match is None:
                continue
            ts, pid, user, db, level, message = match.groups()
            if level in ("STATEMENT", "DETAIL", "HINT"):
                if pending is not None:
                    pending[level.lower()] = message
                continue
            if pending is not None:
                yield pending
            host = ""
            if message.startswith("connection received: host="):
                host = message.split("host=", 1)[1].replace(" port=", ":")
            unknown = user == "[unknown]"
            pending = {
                "timestamp": ts,
                "user": "" if unknown else user,
                "dbname": "" if unknown else db,
                "pid": int(pid),
                "remote_host": host,
                "error_severity": level,
                "state_code": _STATES.get(message, "00000"),
                "message": message,
                "application_name": "" if unknown else "api",
                "backend_type": "client backend",
            }
    if pending is not None:
        yield pending


def to_csvlog(stderr_log: Path, out: Path) -> None:
    """csvlog (26 columns, PostgreSQL 14+) with the same entries as `stderr_log`."""
    with out.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        for r in _records(stderr_log):
            row = [""] * 26
            row[0], row[1], row[2], row[3], row[4] = (
                r["timestamp"],
                r["user"],
                r["dbname"],
                r["pid"],
                r["remote_host"],
            )
            row[6], row[11], row[12], row[13] = 1, r["error_severity"], r["state_code"], r["message"]
            row[14], row[19], row[22], row[23] = (
                r.get("detail", ""),
                r.get("statement", ""),
                r["application_name"],
                r["backend_type"],
            )
            writer.writerow(row)


def to_jsonlog(stderr_log: Path, out: Path) -> None:
    """jsonlog (one object a line, PostgreSQL 15+) with the same entries as `stderr_log`."""
    with out.open("w") as f:
        for r in _records(stderr_log):
            record = {k: v for k, v in r.items() if v != ""}
            f.write(json.dumps(record, separators=(",", ":")) + "\n")


def _forward(language: str) -> tuple[dict[str, str], Callable[[str], str]]:
    """What turns an English log into the same log as a server speaking `language` writes it:
    its level words, and each message rendered through PostgreSQL's msgstr of its msgid (the
    'connection authorized' line is three msgids, as postinit.c writes it)."""
    from playbook.vocabulary import server_events, translations

    lang = translations.language(language)
    levels = {english: mine for mine, english in lang.levels.items()}
    wanted = [m for ids in server_events.TEMPLATES.values() for m in ids if not m.startswith(" ")]
    wanted += [m for m in lang.messages if m.startswith(server_events.HARMLESS_LOG_HEADS)]
    templates = []
    for msgid in dict.fromkeys(wanted):
        if msgid not in lang.messages:
            continue
        english = translations.split_template(msgid)
        regex = re.compile(translations._regex(english) + r"\Z")
        templates.append((regex, english, msgid))
    templates.sort(key=lambda t: -sum(len(x) for x in t[1].literals))

    errno_texts = {english: mine for mine, english in lang.strerror.items()}

    def render(msgid: str, *args: str, errno_text: str = "") -> str:
        mine = translations.split_template(lang.messages.get(msgid, (msgid,))[-1])
        out = [mine.literals[0]]
        for argument, literal in zip(mine.arguments, mine.literals[1:], strict=True):
            if argument is None:
                out.append(errno_texts.get(errno_text, errno_text))
            else:
                out.append(args[argument] if argument < len(args) else "")
            out.append(literal)
        return "".join(out)

    authorized = re.compile(r"connection authorized: user=(\S*) database=(\S*)(?: application_name=(.*))?\Z")
    cache: dict[str, str] = {}

    def message(text: str) -> str:
        found = cache.get(text)
        if found is not None:
            return found
        found = text
        auth = authorized.match(text)
        if auth:
            found = render("connection authorized: user=%s", auth[1]) + render(" database=%s", auth[2])
            if auth[3] is not None:
                found += render(" application_name=%s", auth[3])
        else:
            for regex, english, msgid in templates:
                match = regex.match(text)
                if match:
                    args = [""] * (max((a for a in english.arguments if a is not None), default=-1) + 1)
                    errno_text = ""
                    for argument, value in zip(english.arguments, match.groups(), strict=True):
                        if argument is None:
                            errno_text = value
                        else:
                            args[argument] = value
                    found = render(msgid, *args, errno_text=errno_text)
                    break
        found = found.replace("\n", "\n\t")  # a stderr entry continues on tab-led lines
        if len(cache) < 200_000:
            cache[text] = found
        return found

    return levels, message


def to_language(stderr_log: Path, out: Path, language: str) -> None:
    """The same stderr log as a server with lc_messages in `language` writes it (PostgreSQL's
    own translations, from the shipped catalogs)."""
    levels, message = _forward(language)
    # bytes that are not UTF-8 (the mix has a few) go through as they are
    with (
        stderr_log.open(encoding="utf-8", errors="surrogateescape") as lines,
        out.open("w", encoding="utf-8", errors="surrogateescape") as f,
    ):
        for line in lines:
            head, sep, text = line.partition(":  ")
            if sep:
                prefix, _, level = head.rpartition(" ")
                if level in ("LOG", "FATAL", "ERROR", "WARNING", "PANIC"):
                    line = f"{prefix} {levels.get(level, level)}{sep}{message(text.rstrip(chr(10)))}\n"
            f.write(line)


def ensure_logs(folder: Path, sizes: list[int], genlog: Path, every_size: bool = False) -> dict[str, Path]:
    """The benchmark's files, generated when missing: stderr of each size, and csvlog and jsonlog
    copies of the smallest (of every size with `every_size`)."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for mb in sizes:
        path = folder / f"genlog-{mb}mb.log"
        if not path.exists():
            t0 = time.perf_counter()
            subprocess.run([sys.executable, str(genlog), str(path), str(mb)], check=True)
            print(f"generated {path} in {time.perf_counter() - t0:.0f} s", flush=True)
        out[f"stderr {mb} MB"] = path
    for mb in sizes if every_size else [min(sizes)]:
        source = out[f"stderr {mb} MB"]
        for fmt, convert, ext in (("csvlog", to_csvlog, "csv"), ("jsonlog", to_jsonlog, "json")):
            path = folder / f"genlog-{mb}mb.{ext}"
            if not path.exists():
                t0 = time.perf_counter()
                convert(source, path)
                print(f"converted {path} in {time.perf_counter() - t0:.0f} s", flush=True)
            out[f"{fmt} {mb} MB*"] = path
    return out


@dataclass
class Run:
    wall: float
    cpu: float
    peak_mb: float
    stdout: str


def run_child(cmd: list[str]) -> Run:
    """Run `cmd` alone and measure its own wall time, CPU time and peak RSS (os.wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise SystemExit(f"{cmd[0]} failed ({child.returncode}): {err.read().decode()[-500:]}")
        return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.read().decode())


def ours(path: Path, fmt: str, jobs: int) -> Run:
    cmd = [
        sys.executable,
        "-m",
        "playbook.cli",
        "logs",
        str(path),
        "--format",
        fmt,
        "--json",
        "--jobs",
        str(jobs),
    ]
    if fmt == "stderr":
        cmd += ["--prefix", PREFIX]
    return run_child(cmd)


def pgbadger(path: Path, fmt: str, workdir: Path) -> Run | None:
    exe = shutil.which("pgbadger") or ("/usr/bin/pgbadger" if Path("/usr/bin/pgbadger").exists() else None)
    if exe is None:
        return None
    cmd = [exe, "-j", "1", "-f", {"stderr": "stderr", "csvlog": "csv", "jsonlog": "jsonlog"}[fmt], "-q"]
    if fmt == "stderr":
        cmd += ["--prefix", PREFIX]
    # a pid folder of its own: a second pgBadger on the machine would otherwise refuse to run
    cmd += ["--pid-dir", str(workdir), "-o", str(workdir / "out.html"), str(path)]
    return run_child(cmd)


def best(measure: Callable[[], Run], repeat: int) -> Run:
    """The run with the least CPU time of `repeat` (at least one)."""
    return min((measure() for _ in range(max(repeat, 1))), key=lambda run: run.cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir(), "wt-logspeed-bench"))
    parser.add_argument("--sizes", default="100,500", help="stderr log sizes in MB (default 100,500)")
    parser.add_argument("--genlog", type=Path, default=GENLOG, help="the mix's generator")
    parser.add_argument("--jobs", type=int, default=1, help="--jobs for playbook logs (default 1)")
    parser.add_argument("--no-pgbadger", action="store_true", help="time ours only")
    parser.add_argument("--repeat", type=int, default=3, help="runs of ours per log; the best is shown (3)")
    parser.add_argument(
        "--languages",
        default="",
        help="also time the smallest stderr log as servers in these languages write it (e.g. ru,zh_CN)",
    )
    parser.add_argument(
        "--every-size",
        action="store_true",
        help="csvlog and jsonlog copies of every size, not the smallest only",
    )
    args = parser.parse_args()

    sizes = sorted(int(s) for s in args.sizes.split(","))
    logs = ensure_logs(args.dir, sizes, args.genlog, args.every_size)
    for language in filter(None, args.languages.split(",")):
        path = args.dir / f"genlog-{min(sizes)}mb-{language}.log"
        if not path.exists():
            t0 = time.perf_counter()
            to_language(logs[f"stderr {min(sizes)} MB"], path, language)
            print(f"translated {path} in {time.perf_counter() - t0:.0f} s", flush=True)
        logs[f"stderr {min(sizes)} MB {language}"] = path
    print(f"cpu cores visible: {os.cpu_count()} (shared machine: figures move with the load)")
    print("* converted from the stderr one: same entries; pgBadger is timed on it in its format")
    # `logs --help` loads what the command loads (numpy, pyarrow, the compiled loops), through
    # the same main(); best of the repeats, like every figure below: a shared machine only adds.
    startup = best(lambda: run_child([sys.executable, "-m", "playbook.cli", "logs", "--help"]), args.repeat)
    print(
        f"our start-up (`playbook logs --help`): {startup.wall:.2f} s wall, {startup.cpu:.2f} s CPU, "
        f"{startup.peak_mb:.0f} MB; every figure is the best of {args.repeat} runs (by CPU time)"
    )
    print("MB/s: size / wall time; MB/s/core: size / CPU time; reader: size / (CPU time - start-up CPU)")
    head = f"{'log':<18}{'MB':>7} | {'ours s':>7}{'MB/s':>7}{'MB/s/core':>10}{'reader':>8}{'peak RSS':>9} |"
    head += f" {'pgBadger s':>10}{'MB/s':>7}{'peak RSS':>9} | {'ratio':>6}"
    print(head)
    print("-" * len(head))
    with tempfile.TemporaryDirectory(prefix="pgbadger-") as work:
        for label, path in logs.items():
            fmt = label.split()[0]
            mb = path.stat().st_size / 1e6
            mine = best(lambda path=path, fmt=fmt: ours(path, fmt, args.jobs), args.repeat)
            badger = None if args.no_pgbadger else pgbadger(path, fmt, Path(work))
            reader = mb / max(mine.cpu - startup.cpu, 1e-3)
            line = f"{label:<18}{mb:7.0f} | {mine.wall:7.2f}{mb / mine.wall:7.1f}{mb / mine.cpu:10.1f}"
            line += f"{reader:8.1f}"
            line += f"{mine.peak_mb:8.0f}M |"
            if badger is None:
                line += f" {'-':>10}{'-':>7}{'-':>9} | {'-':>6}"
            else:
                line += f" {badger.wall:10.2f}{mb / badger.wall:7.1f}{badger.peak_mb:8.0f}M"
                line += f" | {badger.wall / mine.wall:5.1f}x"
            print(line, flush=True)
            summary = json.loads(mine.stdout)
            sessions = summary["sessions"]["count"]
            events = sum(e["count"] for e in summary["events"].values())
            print(f"{'':<18}{'':>7}   lines {summary['lines']:,}, events {events:,}, sessions {sessions:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
