from __future__ import annotations

import pandas as pd
import psycopg

from playbook.collect.activity import ActivitySampler
from playbook.evidence.views import counts_over_time
from playbook.lab.server import APP_ROLE, LabServer
from playbook.lab.wait import wait_until
from playbook.target import Target


def test_samples_client_backends_and_leaves_out_its_own(lab: LabServer) -> None:
    with (
        psycopg.connect(lab.dsn(APP_ROLE), application_name="orders") as busy,
        Target(lab.dsn()).connect() as playbook_session,
    ):
        busy.execute("SELECT 1")  # psycopg opened a transaction: idle in transaction from now on
        evidence = ActivitySampler(Target(lab.dsn()), duration=2.0, interval=0.25, progress=False).run()
        own_pid = playbook_session.info.backend_pid
    samples = evidence.samples
    assert len(evidence.ticks) >= 4 and evidence.ticks["ok"].all()  # of 9 slots: a loaded machine skips some
    assert own_pid not in set(samples["pid"])
    assert not samples["application_name"].str.startswith("pg-session-playbook").any()
    orders = samples[samples["application_name"] == "orders"]
    assert set(orders["state"]) == {"idle in transaction"}
    assert orders["xact_age_s"].is_monotonic_increasing
    assert (orders["conn_age_s"] >= orders["xact_age_s"]).all()
    assert evidence.gaps == []


def test_counts_are_zero_filled_when_a_group_vanishes(lab: LabServer) -> None:
    sampler = ActivitySampler(Target(lab.dsn()), duration=0.5, interval=0.1, progress=False)
    with psycopg.connect(lab.dsn(APP_ROLE), application_name="short-lived") as conn:
        pid = conn.info.backend_pid
        sampler._tick()
        sampler._tick()

    def backend_gone() -> bool:  # the backend exits a moment after its client closed
        with lab.admin() as admin:
            return admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone() is None

    wait_until(backend_gone, timeout=10, what="the closed connection's backend to exit")
    sampler._tick()
    evidence = sampler.evidence()
    counts = counts_over_time(evidence.samples, evidence.ticks, ["application_name"])
    assert len(counts) == 3
    assert list(counts["short-lived"]) == [1, 1, 0]


def test_a_plain_role_sees_its_limits_and_is_told_the_grant(lab: LabServer) -> None:
    dsn = lab.create_role("sampler_plain")
    try:
        with psycopg.connect(lab.dsn(APP_ROLE), application_name="someone-else"):
            evidence = ActivitySampler(Target(dsn), duration=0.3, interval=0.1, progress=False).run()
        assert (evidence.samples["state"] == "(hidden)").any()
        # the GRANT that would show them is the run's to say (manifest "unavailable", the verdict)
        assert evidence.hidden_note and "roles this role may not see" in evidence.hidden_note
    finally:
        with lab.admin() as admin:
            admin.execute("DROP ROLE sampler_plain")


def test_a_lost_session_is_a_gap_and_sampling_goes_on(private_lab: LabServer) -> None:
    """Terminated once, then the whole server restarted: two gaps, each with its error, and samples after."""
    import threading

    from playbook.lab.wait import wait_until

    sampler = ActivitySampler(Target(private_lab.dsn()), duration=60.0, interval=0.2, progress=False)
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(sampler.run()))

    def sampler_pid() -> int | None:
        with private_lab.admin() as admin:
            row = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'pg-session-playbook'"
            ).fetchone()
        return row[0] if row else None

    thread.start()
    try:
        first = wait_until(sampler_pid, timeout=20, what="the sampler's session")
        with private_lab.admin() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [first])
        wait_until(lambda: len(sampler.gaps) >= 1, timeout=20, what="the first gap to close")
        wait_until(lambda: (pid := sampler_pid()) and pid != first, timeout=20, what="a new session")
        private_lab.restart()
        wait_until(lambda: len(sampler.gaps) >= 2, timeout=20, what="the second gap to close")
        wait_until(lambda: sampler._ticks[-1][2], timeout=20, what="a successful tick after the restart")
    finally:
        sampler.stop()
        thread.join(timeout=40)
    evidence = result[0]
    assert isinstance(evidence, type(sampler.evidence()))
    gaps = evidence.gaps
    assert gaps[0]["sqlstate"] == "57P01" or "terminating connection" in gaps[0]["error"]
    assert "administrator command" in gaps[0]["error"]
    assert all(g["start"] <= g["end"] for g in gaps[:2])
    restart_gap = gaps[1]
    assert restart_gap["reconnect_attempts"] >= 1 or "shutting down" in restart_gap["error"]
    last_gap_end = max(pd.Timestamp(g["end"]) for g in gaps)
    ok_after = evidence.ticks[evidence.ticks["ok"] & (evidence.ticks["ts"] >= last_gap_end)]
    assert len(ok_after) >= 1  # it went on sampling after the restart
