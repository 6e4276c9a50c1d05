"""`playbook watch` against a real server: segments on disk, whole whatever ends the watcher, a
watcher that outlives the server's restart and its own session's termination, retention by size,
and `playbook run --evidence-from WATCH_DIR --since …` diagnosing what was watched, with no DSN.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from conftest import run_cli, xact_age
from playbook import APPLICATION_NAME
from playbook.errors import PlaybookError
from playbook.evidence import Evidence
from playbook.lab.pgbouncer_process import PgBouncer, find_pgbouncer
from playbook.lab.server import APP_ROLE, LabServer
from playbook.lab.wait import wait_until
from playbook.lab.workloads import Service, wait_for_requests
from playbook.notebook import load_or_collect
from playbook.watch.segments import PARTIAL, SEGMENTS, Segment, load_slice, parse_keep, segments

REPO = Path(__file__).resolve().parents[1]
STOP_TIMEOUT_S = 30


def start_watch(dsn: str, out: Path, *args: str) -> subprocess.Popen[str]:
    """`playbook watch` as systemd runs it: its own process, left running for the test to end."""
    return subprocess.Popen(
        [sys.executable, "-m", "playbook.cli", "watch", "--dsn", dsn, "--out", str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(REPO),
    )


@pytest.fixture
def watchers() -> Iterator[list[subprocess.Popen[str]]]:
    """Every watcher a test starts is ended, even when the test fails."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=STOP_TIMEOUT_S)
    return proc.returncode, err


def ticks(out: Path) -> int:
    """Ticks in the whole segments written so far."""
    return sum(len(Evidence.load(s.path).activity_ticks) for s in segments(out))


def no_dsn_env(**extra: str) -> dict[str, str]:
    """The environment of a user with no database configured at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "PLAYBOOK_DSN"}
    return {**env, **extra}


def test_watched_leak_is_diagnosed_later_without_a_dsn(
    lab: LabServer, tmp_path: Path, one_page: Path, watchers: list[subprocess.Popen[str]]
) -> None:
    out = tmp_path / "watch"
    with Service(lab.dsn(APP_ROLE), "billing", workers=2, min_size=2, max_size=4) as service:
        wait_for_requests(service, 5)
        watchers.append(
            start_watch(
                lab.dsn(), out, "--interval", "0.5", "--segment", "2", "--server-log", str(lab.stderr_log)
            )
        )
        service.leak_transaction()
        wait_until(lambda: xact_age(lab, "billing") >= 10.5, timeout=30, what="a 10 s old leak")
        seen = ticks(out)
        wait_until(lambda: ticks(out) > seen, timeout=15, what="a segment written after the leak aged")
        code, err = stop(watchers[0])
    assert code == 0, err
    assert "Traceback" not in err
    written = segments(out)
    assert len(written) >= 3
    for segment in written:  # every segment whole: each loads, with its frames
        part = Evidence.load(segment.path)
        assert not part.activity_ticks.empty
    assert not list((out / SEGMENTS).glob(f"{PARTIAL}*"))
    evidence = load_slice(out, "10m")
    assert (evidence.activity_samples["application_name"] == "billing").any()
    assert evidence.collected("server_log") and evidence.manifest["server_logs"] == [str(lab.stderr_log)]
    # A notebook opened by hand reads the same slice from the folder and a time range.
    by_hand = load_or_collect(evidence_dir=str(out), since="10m")
    assert by_hand.manifest["window"] == evidence.manifest["window"]

    report = tmp_path / "report"
    result = run_cli(
        "run", "--evidence-from", str(out), "--since", "10m", "--out", str(report),
        env=no_dsn_env(PLAYBOOK_NOTEBOOKS=str(one_page)),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # a leak is a warning, as in a live run
    summary = json.loads((report / "summary.json").read_text())
    leak = next(f for f in summary["findings"] if f["id"] == "LEAK-001")
    assert leak["evidence"]["sessions"][0]["application_name"] == "billing"
    manifest = json.loads((report / "evidence" / "manifest.json").read_text())
    assert manifest["live"]["watch"] == str(out.resolve())


def test_watch_outlives_a_restart_and_its_own_termination(
    private_lab: LabServer, tmp_path: Path, watchers: list[subprocess.Popen[str]]
) -> None:
    out = tmp_path / "watch"
    watchers.append(start_watch(private_lab.dsn(), out, "--interval", "0.3", "--segment", "1"))

    def own_backends() -> list[int]:
        with private_lab.admin() as admin:
            rows = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (APPLICATION_NAME,)
            ).fetchall()
        return [int(r[0]) for r in rows]

    # A segment written: the sampler's session is up, and the start-up's short sessions are gone.
    wait_until(lambda: segments(out), timeout=20, what="a first segment")
    wait_until(lambda: len(own_backends()) == 1, timeout=20, what="the watcher's one session")
    with private_lab.admin() as admin:
        for pid in own_backends():
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    def closed_gaps() -> list[dict[str, object]]:
        return sorted(
            (dict(gap) for s in segments(out) for gap in Evidence.load(s.path).gaps if gap.get("end")),
            key=lambda gap: str(gap["start"]),
        )

    terminated = wait_until(closed_gaps, timeout=20, what="the termination's gap in the segments")[0]
    assert terminated["sqlstate"] == "57P01"  # terminating connection due to administrator command
    private_lab.restart()
    restarted = wait_until(
        lambda: next((g for g in closed_gaps() if str(g["start"]) > str(terminated["start"])), None),
        timeout=40,
        what="a closed gap of the restart in the segments",
    )
    resumed = str(restarted["end"])
    wait_until(
        lambda: any(
            Evidence.load(s.path).activity_ticks["ok"].any()
            for s in segments(out)
            if s.start > pd.Timestamp(resumed)
        ),
        timeout=30,
        what="samples after the restart",
    )
    code, err = stop(watchers[0], signal.SIGINT)  # Ctrl-C ends it as SIGTERM does
    assert code == 0, err
    evidence = load_slice(out)
    ok = evidence.activity_ticks[evidence.activity_ticks["ok"]]["ts"]
    assert (ok < pd.Timestamp(str(terminated["start"]))).any() and (ok > pd.Timestamp(resumed)).any()
    assert [g["start"] for g in evidence.gaps][:2] == [terminated["start"], restarted["start"]]


def test_kill_9_leaves_only_whole_segments_and_keep_bounds_the_folder(
    lab: LabServer, tmp_path: Path, watchers: list[subprocess.Popen[str]]
) -> None:
    out = tmp_path / "watch"
    # Segments of a fifth of a second: the kill lands while one is being written more often than not.
    args = ("--interval", "0.05", "--segment", "0.2", "--keep", "60KB")
    watchers.append(start_watch(lab.dsn(), out, *args))
    first = wait_until(lambda: segments(out), timeout=20, what="a first segment")[0]
    wait_until(
        lambda: first.path.name not in {s.path.name for s in segments(out)}, timeout=30, what="--keep at work"
    )
    watchers[0].send_signal(signal.SIGKILL)
    watchers[0].wait(STOP_TIMEOUT_S)
    whole = segments(out)
    assert whole and sum(s.bytes for s in whole[:-1]) <= parse_keep("60KB").bytes  # type: ignore[operator]
    for segment in whole:
        assert not Evidence.load(segment.path).activity_ticks.empty
    assert len(load_slice(out).activity_ticks) >= len(whole)
    # What the killed writer left half-written (if anything) is never read, and goes on restart.
    (out / SEGMENTS / f"{PARTIAL}left-by-a-kill").mkdir(exist_ok=True)
    watchers.append(start_watch(lab.dsn(), out, *args))
    wait_until(
        lambda: not list((out / SEGMENTS).glob(f"{PARTIAL}left*")), timeout=20, what="the partial removed"
    )
    newest = segments(out)[-1].path.name
    wait_until(
        lambda: segments(out)[-1].path.name != newest, timeout=20, what="the restarted watch's segment"
    )
    code, err = stop(watchers[1])
    assert code == 0, err


def test_bad_input_is_one_sentence(lab: LabServer, tmp_path: Path) -> None:
    report = str(tmp_path / "report")
    cases = [
        (
            ("run", "--evidence-from", str(tmp_path / "nowhere"), "--since", "1h", "--out", report),
            "not a folder",
        ),
        (("watch", "--out", str(tmp_path / "w"), "--dsn", lab.dsn(), "--keep", "lots"), "--keep"),
        (("watch", "--out", str(tmp_path / "w"), "--dsn", lab.dsn(), "--interval", "0"), "--interval"),
    ]
    for args, words in cases:
        result = run_cli(*args, env=no_dsn_env())
        assert result.returncode == 3, (args, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
    # A watch folder whose segments do not cover the slice asked for.
    out = tmp_path / "watch"
    (out / SEGMENTS).mkdir(parents=True)
    (out / "watch.json").write_text(json.dumps({"schema": "pg-session-playbook/watch/v1"}))
    result = run_cli("run", "--evidence-from", str(out), "--since", "1h", "--out", report, env=no_dsn_env())
    assert result.returncode == 3 and "no segment of" in result.stderr, result.stderr
    with pytest.raises(PlaybookError, match="no segment"):
        load_slice(out, "2h")


def test_the_systemd_unit_parses_and_verifies(tmp_path: Path) -> None:
    from playbook.cli import build_parser

    unit = REPO / "examples" / "pg-session-playbook-watch.service"
    text = unit.read_text()
    command = text.split("ExecStart=", 1)[1].split("\n[")[0].replace("\\\n", " ").split("\n")[0]
    args = build_parser().parse_args(shlex.split(command.split("bin/playbook ", 1)[1]))
    assert args.command == "watch" and args.interval == 10
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is not installed: the unit cannot be verified on this machine")
    local = text.replace("/opt/pg-session-playbook/.venv/bin", str(Path(sys.executable).parent))
    local = local.replace("User=postgres", "User=root").replace("/var/lib/pg-session-playbook", str(tmp_path))
    (tmp_path / unit.name).write_text(local)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / unit.name)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "pg-session-playbook" not in result.stderr, result.stderr


def test_watch_samples_pgbouncer_and_follows_its_log(
    lab: LabServer, tmp_path: Path, watchers: list[subprocess.Popen[str]]
) -> None:
    if find_pgbouncer() is None:
        pytest.fail("pgbouncer is not installed: `make install` (apt-get install pgbouncer) installs it")
    out = tmp_path / "watch"
    with PgBouncer(tmp_path / "bnc", lab) as bouncer:
        watchers.append(
            start_watch(
                lab.dsn(), out, "--interval", "0.3", "--segment", "1",
                "--pgbouncer", bouncer.console_dsn(), "--pgbouncer-log", str(bouncer.log_file),
            )
        )  # fmt: skip
        wait_until(lambda: segments(out), timeout=20, what="a first segment")
        with psycopg.connect(bouncer.dsn(), application_name="through-bouncer") as client:
            client.execute("SELECT 1")
        written = len(segments(out))
        wait_until(lambda: len(segments(out)) > written, timeout=20, what="a segment after the client left")
        code, err = stop(watchers[0])
    assert code == 0, err
    evidence = load_slice(out)
    assert evidence.collected("pgbouncer_console") and evidence.collected("pgbouncer_log")
    assert not evidence.frame("pgbouncer_pools").empty
    assert evidence.snapshot("pgbouncer_config").get("version")
    console = evidence.snapshot("pgbouncer_console")
    assert console["ticks"] == len(evidence.frame("pgbouncer_ticks")) > 2
    assert not evidence.frame("pgbouncer_log_events").empty, evidence.manifest["failures"]


def test_a_log_rotated_by_rename_is_read_across_the_rotation(
    lab: LabServer, tmp_path: Path, watchers: list[subprocess.Popen[str]]
) -> None:
    log = tmp_path / "app.log"
    log.write_text("")

    def append(what: str) -> datetime:
        at = datetime.now(timezone.utc)
        with log.open("a") as out:
            out.write(f"{at:%Y-%m-%d %H:%M:%S},{at.microsecond // 1000:03d} ERROR billing: {what}\n")
        return at

    def segment_after(at: datetime) -> Segment:
        return wait_until(
            lambda: next((s for s in segments(out) if s.start > at), None), timeout=20, what="a later segment"
        )

    out = tmp_path / "watch"
    watchers.append(
        start_watch(lab.dsn(), out, "--interval", "0.2", "--segment", "0.5", "--app-log", str(log))
    )
    wait_until(lambda: segments(out), timeout=20, what="a first segment")
    segment_after(append("server closed the connection unexpectedly"))
    log.rename(tmp_path / "app.log.1")  # logrotate's default: renamed, and a new file in its place
    log.write_text("")
    segment_after(append("server closed the connection unexpectedly"))
    code, err = stop(watchers[0])
    assert code == 0, err
    events = load_slice(out, app_tz="UTC").app_log_events
    assert len(events) == 2, events
    assert set(events["file"]) == {str(log)}  # the log as the user named it, whichever file held it
