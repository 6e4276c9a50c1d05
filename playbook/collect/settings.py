"""One snapshot of the server's settings and limits that decide how long a session may live.

Version aware (PostgreSQL 13 to 18): a setting the server does not have is reported as absent,
a view the role may not read is reported as unavailable with the GRANT that would show it.
Nothing here fails because of privileges.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.rows import dict_row

from playbook.evidence.settings import usable_connections
from playbook.target import (
    SESSION_LOSS_ERRORS,
    OwnSessionLost,
    lost_during,
    reopen_after_loss,
    session_lost,
)

# Every setting REFERENCE.md names, plus what the log readers need to parse the server's logs.
SESSION_SETTINGS = (
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "statement_timeout",
    "lock_timeout",
    "transaction_timeout",
    "tcp_keepalives_idle",
    "tcp_keepalives_interval",
    "tcp_keepalives_count",
    "tcp_user_timeout",
    "client_connection_check_interval",
    "max_connections",
    "superuser_reserved_connections",
    "reserved_connections",
    "authentication_timeout",
    "log_connections",
    "log_disconnections",
)
LOG_SETTINGS = (
    "log_destination",
    "logging_collector",
    "log_directory",
    "log_filename",
    "log_line_prefix",
    "log_timezone",
    "lc_messages",
    "data_directory",
)
GRANT_HINT = "GRANT pg_monitor TO {role};"
OWN_SESSION_SETTINGS = ("statement_timeout", "lock_timeout", "default_transaction_read_only")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "total_seconds"):
        return value.total_seconds()
    return value


def _rows(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, params)
        return [{k: _jsonable(v) for k, v in row.items()} for row in cur.fetchall()]


SETTINGS_PHASE = "settings snapshot"


def snapshot_settings(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Everything that bounds a session's life, in one JSON-serialisable dict.

    The playbook's own session may be lost on the way: the path resets it, the server ends it
    (`session_lost`). Then the snapshot is taken again, whole, on a fresh session opened like it
    (`reopen_after_loss`: a few connects with backoff), once; the result's "own_session_lost" lists
    what was lost (phase, start, end, error, sqlstate) and `conn` is left closed. When no fresh
    session answers, or `conn` is not one the playbook opened, OwnSessionLost says so in one
    sentence: the run records it as the settings' failure. Any other error is raised as it is.
    """
    try:
        return _snapshot(conn)
    except SESSION_LOSS_ERRORS as exc:
        if not session_lost(conn, exc):
            raise
        lost = lost_during(SETTINGS_PHASE, exc, datetime.now(timezone.utc))
    try:
        fresh = reopen_after_loss(conn)
    except psycopg.OperationalError as again:
        raise OwnSessionLost(_unread(lost, again)) from None
    if fresh is None:
        conn.close()
        raise OwnSessionLost(_unread(lost, None))
    with fresh:
        try:
            result = _snapshot(fresh)
        except SESSION_LOSS_ERRORS as again:
            if not session_lost(fresh, again):
                raise
            raise OwnSessionLost(_unread(lost, again)) from None
    lost["end"] = datetime.now(timezone.utc).isoformat()
    result["own_session_lost"] = [lost]
    return result


def _unread(lost: dict[str, Any], again: BaseException | None) -> str:
    then = " ".join(str(again).split())[:300] if again is not None else "it was not opened by the playbook"
    return (
        f"the playbook's own session was lost during the {lost['phase']} ({lost['error']}) and no fresh "
        f"session could read it again ({then}): the server's settings and limits are unknown"
    )


def _snapshot(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"unavailable": [], "absent": []}
    role = conn.info.user

    def attempt(name: str, what: Callable[[], Any], grant: str | None = None) -> Any:
        try:
            return what()
        except psycopg.errors.InsufficientPrivilege as exc:
            result["unavailable"].append(
                {"what": name, "error": str(exc).strip(), "grant": (grant or GRANT_HINT).format(role=role)}
            )
        except psycopg.errors.UndefinedTable as exc:
            result["absent"].append(name)
            result.setdefault("notes", []).append(str(exc).strip())
        except psycopg.errors.UndefinedColumn:
            result["absent"].append(name)
        return None

    server = _rows(
        conn,
        "SELECT current_setting('server_version') AS server_version,"
        " current_setting('server_version_num')::int AS server_version_num,"
        " pg_postmaster_start_time() AS postmaster_start, pg_conf_load_time() AS conf_load_time,"
        " now() AS snapshot_at, current_user AS role, current_database() AS database,"
        " inet_server_addr() IS NOT NULL AS over_tcp,"
        " (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS is_superuser,"
        " pg_has_role(current_user, 'pg_monitor', 'MEMBER') AS has_pg_monitor,"
        " pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') AS has_read_all_stats,"
        " pg_has_role(current_user, 'pg_read_all_settings', 'MEMBER') AS has_read_all_settings",
    )[0]
    result["server"] = server
    names = list(SESSION_SETTINGS + LOG_SETTINGS)
    found = _rows(
        conn,
        "SELECT name, setting, unit, source, sourcefile, sourceline, vartype, boot_val, reset_val"
        " FROM pg_settings WHERE name = ANY(%s)",
        [names],
    )
    result["settings"] = {row.pop("name"): row for row in found}
    # Our own startup options set these for our session only (source "client"): that value is ours,
    # not what the server gives applications, which this session cannot see without pg_file_settings.
    for name in OWN_SESSION_SETTINGS:
        entry = result["settings"].get(name)
        if entry and entry.get("source") == "client":
            entry.update(setting=None, source="not visible: the playbook's own session sets it")
        elif entry and entry.get("source") == "session" and getattr(conn, "pooled", False):
            # Through a pooler our SET LOCAL sets it for our transaction only: what a session of
            # the server gets is what RESET would give it back.
            entry.update(setting=entry.get("reset_val"), source="reset value: SET LOCAL hides it")
    result["absent"].extend(name for name in names if name not in result["settings"])
    # Without pg_read_all_settings, sourcefile is null and some values read as hidden.
    if not (server["is_superuser"] or server["has_read_all_settings"]):
        result["unavailable"].append(
            {
                "what": "setting sources (sourcefile) and data_directory",
                "error": "needs pg_read_all_settings",
                "grant": f"GRANT pg_read_all_settings TO {role};",
            }
        )
    result["usable_connections"] = usable_connections(result)
    # SHOW on a TCP session gives the keepalive values the kernel really uses: 0 means the OS default.
    result["keepalives_in_force"] = (
        {
            name: _rows(conn, f"SHOW {name}")[0][name]
            for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
        }
        if server["over_tcp"]
        else None
    )
    result["overrides"] = attempt(
        "pg_db_role_setting",
        lambda: _rows(
            conn,
            "SELECT coalesce(r.rolname, '') AS role, coalesce(d.datname, '') AS database, s.setconfig"
            " FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole"
            " LEFT JOIN pg_database d ON d.oid = s.setdatabase ORDER BY 1, 2",
        ),
    )
    result["role_limits"] = attempt(
        "pg_roles",
        lambda: _rows(
            conn,
            "SELECT rolname AS role, rolconnlimit AS conn_limit, rolcanlogin AS can_login FROM pg_roles"
            " WHERE rolconnlimit <> -1 OR rolcanlogin ORDER BY rolname",
        ),
    )
    result["database_limits"] = attempt(
        "pg_database",
        lambda: _rows(
            conn,
            "SELECT datname AS database, datconnlimit AS conn_limit, datallowconn AS allow_conn"
            " FROM pg_database ORDER BY datname",
        ),
    )
    session_columns = (
        ", sessions, sessions_abandoned, sessions_fatal, sessions_killed, session_time, active_time,"
        " idle_in_transaction_time"
        if server["server_version_num"] >= 140000
        else ""
    )
    result["database_stats"] = attempt(
        "pg_stat_database",
        lambda: _rows(
            conn,
            f"SELECT datname AS database, numbackends{session_columns}, stats_reset"
            " FROM pg_stat_database WHERE datname IS NOT NULL ORDER BY datname",
        ),
    )
    if server["server_version_num"] < 140000:
        result["absent"].append("pg_stat_database session counters (PostgreSQL 14+)")
    return result
