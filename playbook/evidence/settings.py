"""The settings snapshot: the server's settings and limits that decide how long a session lives.

collect/settings.py takes it (one read-only pass over pg_settings, pg_db_role_setting, pg_roles,
pg_database and pg_stat_database); everything else reads it through these types and functions.
A key is absent from `settings` when the server does not have that setting (its version), and
`setting` is None when the playbook could not see it.
"""

from __future__ import annotations

from typing import Any, TypedDict


class SettingEntry(TypedDict, total=False):
    """One pg_settings row: `setting` in `unit` ('ms', 's', 'min', '8kB', or None)."""

    setting: str | None
    unit: str | None
    source: str | None
    sourcefile: str | None
    sourceline: int | None
    vartype: str | None
    boot_val: str | None
    reset_val: str | None


class ServerInfo(TypedDict, total=False):
    server_version: str
    server_version_num: int
    postmaster_start: str
    conf_load_time: str
    snapshot_at: str
    role: str
    database: str
    over_tcp: bool
    is_superuser: bool
    has_pg_monitor: bool
    has_read_all_stats: bool
    has_read_all_settings: bool


class Unavailable(TypedDict):
    """Something the role could not read, why, and the GRANT that would show it."""

    what: str
    error: str
    grant: str


class Override(TypedDict):
    """ALTER ROLE/DATABASE … SET: '' for role or database means every one."""

    role: str
    database: str
    setconfig: list[str]


class SettingsSnapshot(TypedDict, total=False):
    server: ServerInfo
    settings: dict[str, SettingEntry]
    usable_connections: int | None
    keepalives_in_force: dict[str, str] | None
    overrides: list[Override] | None
    role_limits: list[dict[str, Any]] | None
    database_limits: list[dict[str, Any]] | None
    database_stats: list[dict[str, Any]] | None
    unavailable: list[Unavailable]
    absent: list[str]


_TIME_UNITS_S = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def setting_seconds(entry: SettingEntry | dict[str, Any] | None) -> float | None:
    """A time setting in seconds; None when absent, not visible, or 0 (disabled, for every timeout)."""
    if not entry or entry.get("setting") in (None, ""):
        return None
    factor = _TIME_UNITS_S.get(str(entry.get("unit") or ""), 1.0)
    seconds = float(str(entry["setting"])) * factor
    return seconds or None


def setting_text(snapshot: SettingsSnapshot | dict[str, Any], name: str) -> str | None:
    """A setting's value as the server shows it; None when absent or not visible."""
    entry = (snapshot.get("settings") or {}).get(name)
    value = entry.get("setting") if entry else None
    return None if value in (None, "") else str(value)


def setting_number(snapshot: SettingsSnapshot | dict[str, Any], name: str) -> int:
    """An integer setting (max_connections, …); 0 when absent or not visible."""
    text = setting_text(snapshot, name)
    return int(text) if text is not None else 0


def usable_connections(snapshot: SettingsSnapshot | dict[str, Any]) -> int | None:
    """max_connections minus the slots ordinary roles can never use (both reserved bands)."""
    if "max_connections" not in (snapshot.get("settings") or {}):
        return None
    return (
        setting_number(snapshot, "max_connections")
        - setting_number(snapshot, "superuser_reserved_connections")
        - setting_number(snapshot, "reserved_connections")
    )


def duration_text_seconds(value: str) -> float | None:
    """A setting's text as ALTER … SET stores it ('45s', '2min', '1500' = ms) in seconds; None if 0."""
    text = value.strip().lower()
    for unit, factor in sorted(_TIME_UNITS_S.items(), key=lambda item: -len(item[0])):
        if text.endswith(unit):
            try:
                number = float(text[: -len(unit)]) * factor
            except ValueError:
                return None
            return number or None
    try:
        return float(text) / 1000 or None
    except ValueError:
        return None
