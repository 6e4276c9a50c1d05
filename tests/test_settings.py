from __future__ import annotations

import psycopg

from playbook.collect.settings import SESSION_SETTINGS, snapshot_settings
from playbook.lab.server import LabServer
from playbook.target import Target


def test_snapshot_on_every_server_build(any_server: LabServer) -> None:
    with Target(any_server.dsn()).connect() as conn:
        snap = snapshot_settings(conn)
    version = snap["server"]["server_version_num"]
    assert snap["server"]["has_pg_monitor"] is True
    assert snap["unavailable"] == []
    # What the server does not have is reported as absent, never as an error.
    assert ("transaction_timeout" in snap["absent"]) == (version < 170000)
    assert ("reserved_connections" in snap["absent"]) == (version < 160000)
    present = [name for name in SESSION_SETTINGS if name not in snap["absent"]]
    assert set(present) <= set(snap["settings"])
    assert snap["usable_connections"] == 97  # 100 minus 3 superuser-reserved, 0 reserved_connections
    # Over TCP, SHOW gives the keepalive values the kernel really uses (Linux: 7200/75/9).
    assert snap["keepalives_in_force"]["tcp_keepalives_idle"] not in ("0", None)
    if version >= 140000:
        assert "sessions_killed" in snap["database_stats"][0]


def test_overrides_and_connection_limits_are_read(lab: LabServer) -> None:
    with lab.admin() as admin:
        admin.execute("CREATE ROLE settings_probe LOGIN CONNECTION LIMIT 7")
        admin.execute("ALTER ROLE settings_probe SET idle_session_timeout = '45s'")
        admin.execute("ALTER DATABASE lab CONNECTION LIMIT 50")
    try:
        with Target(lab.dsn()).connect() as conn:
            snap = snapshot_settings(conn)
        override = [o for o in snap["overrides"] if o["role"] == "settings_probe"]
        assert override and "idle_session_timeout=45s" in override[0]["setconfig"]
        assert {"role": "settings_probe", "conn_limit": 7, "can_login": True} in snap["role_limits"]
        assert [d["conn_limit"] for d in snap["database_limits"] if d["database"] == "lab"] == [50]
    finally:
        with lab.admin() as admin:
            admin.execute("DROP ROLE settings_probe")
            admin.execute("ALTER DATABASE lab CONNECTION LIMIT -1")


def test_a_plain_role_is_told_what_it_cannot_see(lab: LabServer) -> None:
    dsn = lab.create_role("settings_plain")
    try:
        with Target(dsn).connect() as conn:
            snap = snapshot_settings(conn)
        grants = " ".join(u["grant"] for u in snap["unavailable"])
        assert "GRANT pg_read_all_settings TO settings_plain;" in grants
        assert snap["settings"]["max_connections"]["setting"] == "100"
    finally:
        with lab.admin() as admin:
            admin.execute("DROP ROLE settings_plain")


def test_snapshot_needs_no_write(lab: LabServer) -> None:
    with Target(lab.dsn()).connect() as conn:
        snapshot_settings(conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_the_playbooks_own_session_values_are_not_passed_off_as_the_servers(lab: LabServer) -> None:
    with Target(lab.dsn()).connect() as conn:
        snap = snapshot_settings(conn)
    assert snap["settings"]["statement_timeout"]["setting"] is None
    assert "playbook's own session" in snap["settings"]["statement_timeout"]["source"]
    assert snap["settings"]["idle_session_timeout"]["source"] != "client"
