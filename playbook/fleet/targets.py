"""TARGETS.yaml: which databases the fleet examines, checked before any task is submitted.

```yaml
defaults: {duration: 60, interval: 1, deadline: 660, retries: 2, labels: {env: prod}, app_tz: UTC}
targets:
  - name: orders
    dsn: "host=db1 port=5432 dbname=orders user=monitor"   # or `service: orders`
    server_log: [/var/log/postgresql/postgresql-16-main.log]
    app_log: []
    pgbouncer: "host=db1 port=6432 dbname=pgbouncer user=monitor"   # its admin console, sampled
    pgbouncer_log: [/var/log/pgbouncer/pgbouncer.log]
    log_tz: Asia/Shanghai     # the zone of the server log's clock (default: its log_timezone)
    prefix: "%m [%p] "        # the server's log_line_prefix (default: read live, else guessed)
    labels: {team: payments}
    password_env: ORDERS_PGPASSWORD   # optional: the variable, on the worker, holding the password
```

A target's run options are those of `playbook run`, spelled as the flags without dashes
(RUN_KEYS), and are checked by the same `RunRequest.build`; `defaults` may hold any of them but
the target's identity (name, dsn, service, password_env).

A password never stands in the file: a DSN with `password=` (or a URL with one) is refused.
The password comes from a service file, `.pgpass`, or the environment variable a target names in
`password_env`, read on the worker that runs it (it never travels in a task).
Precedence: the target's own value, else the command line's flag (--duration, --interval), else
`defaults`, else the built-in default. Labels merge, the target's winning. Relative times (since:
2h) count from when the fleet reads the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playbook.errors import PlaybookError
from playbook.request import RunRequest, positive_seconds

DEFAULT_DURATION_S = 60.0
DEFAULT_INTERVAL_S = 1.0
DEADLINE_MARGIN_S = 600.0  # default deadline: the window plus this, for connecting and rendering
DEFAULT_RETRIES = 2
MAX_RETRIES = 10

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # a folder name on every filesystem
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TOP_KEYS = {"defaults", "targets"}
# A target's run options: `playbook run`'s flags that make sense per database, without their dashes.
RUN_KEYS = {
    "server_log", "app_log", "pgbouncer", "pgbouncer_log", "log_tz", "app_tz", "prefix",
    "since", "until", "app", "duration", "interval", "notebooks",
}  # fmt: skip
BUILT_IN: dict[str, Any] = {
    "duration": DEFAULT_DURATION_S,
    "interval": DEFAULT_INTERVAL_S,
    "notebooks": "all",
}
FLEET_KEYS = {"deadline", "retries", "labels"}  # the fleet's own, per target
DEFAULT_KEYS = RUN_KEYS | FLEET_KEYS
TARGET_KEYS = {*DEFAULT_KEYS, "name", "dsn", "service", "password_env"}


@dataclass(frozen=True)
class TargetSpec:
    """One database of the fleet, fully resolved: the run it asks for (its `out` is set on the
    worker) and the fleet's own values; no password anywhere."""

    name: str
    request: RunRequest
    labels: dict[str, str] = field(default_factory=dict)
    deadline: float = DEFAULT_DURATION_S + DEADLINE_MARGIN_S
    retries: int = DEFAULT_RETRIES
    password_env: str | None = None

    @property
    def public_dsn(self) -> str:
        return self.request.public_dsn


@dataclass(frozen=True)
class Overrides:
    """The command line's values; None where the flag was not given."""

    duration: float | None = None
    interval: float | None = None


def load_targets(path: Path, overrides: Overrides | None = None) -> list[TargetSpec]:
    """The targets of TARGETS.yaml, checked; any bad input is a PlaybookError of one sentence."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlaybookError(f"the targets file {path} does not exist") from None
    except IsADirectoryError:
        raise PlaybookError(f"{path} is a directory, not a targets file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlaybookError(
            f"cannot read the targets file {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not YAML"
        raise PlaybookError(f"{path} is not valid YAML{where}: {problem}") from None
    return parse_targets(data, where=str(path), overrides=overrides or Overrides())


def parse_targets(data: Any, *, where: str, overrides: Overrides) -> list[TargetSpec]:
    """The targets of an already parsed document (see the module's docstring for its shape)."""
    if not isinstance(data, Mapping):
        raise PlaybookError(f"{where} must be a mapping with a `targets` list")
    _no_unknown_keys(data, TOP_KEYS, where)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise PlaybookError(f"{where}: `defaults` must be a mapping")
    _no_unknown_keys(defaults, DEFAULT_KEYS, f"{where}: defaults")
    entries = data.get("targets")
    if not isinstance(entries, list) or not entries:
        raise PlaybookError(f"{where} names no target: give a non-empty `targets` list")
    targets: list[TargetSpec] = []
    seen: set[str] = set()
    for number, entry in enumerate(entries, start=1):
        spec = _target(entry, number, defaults, overrides, where)
        if spec.name in seen:
            raise PlaybookError(f"{where}: the target name {spec.name!r} appears twice")
        seen.add(spec.name)
        targets.append(spec)
    return targets


def _target(
    entry: Any, number: int, defaults: Mapping[str, Any], overrides: Overrides, where: str
) -> TargetSpec:
    if not isinstance(entry, Mapping):
        raise PlaybookError(f"{where}: target #{number} must be a mapping with a name and a dsn or service")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise PlaybookError(
            f"{where}: target #{number} needs a `name` of letters, digits, '.', '_' or '-' (a folder name)"
        )
    label = f"{where}: target {name!r}"
    _no_unknown_keys(entry, TARGET_KEYS, label)
    dsn = _dsn(entry, label)

    def pick(key: str, override: float | None = None) -> Any:
        if key in entry:
            return entry[key]
        if override is not None:
            return override
        return defaults.get(key)

    options = {key: pick(key) for key in RUN_KEYS}
    options.update(
        duration=pick("duration", overrides.duration), interval=pick("interval", overrides.interval)
    )
    for key, default in BUILT_IN.items():
        options[key] = default if options[key] is None else options[key]
    try:
        request = RunRequest.build(dsn=dsn, **options)
    except PlaybookError as exc:
        raise PlaybookError(f"{label}: {exc}") from None
    deadline = pick("deadline")
    deadline = request.duration + DEADLINE_MARGIN_S if deadline is None else deadline
    try:
        deadline = positive_seconds(deadline)
    except PlaybookError as exc:
        raise PlaybookError(f"{label}: deadline: {exc}") from None
    retries = pick("retries")
    retries = DEFAULT_RETRIES if retries is None else retries
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise PlaybookError(f"{label}: retries must be a whole number from 0 to {MAX_RETRIES}")
    password_env = entry.get("password_env")
    if password_env is not None and (not isinstance(password_env, str) or not ENV_NAME.match(password_env)):
        raise PlaybookError(
            f"{label}: password_env must name an environment variable, like ORDERS_PGPASSWORD"
        )
    return TargetSpec(
        name=name,
        request=request,
        labels={
            **_labels(defaults.get("labels"), f"{where}: defaults"),
            **_labels(entry.get("labels"), label),
        },
        deadline=deadline,
        retries=retries,
        password_env=password_env,
    )


def _dsn(entry: Mapping[str, Any], label: str) -> str:
    """The target's DSN (a `service` is one too); the password check is RunRequest.build's."""
    dsn, service = entry.get("dsn"), entry.get("service")
    if (dsn is None) == (service is None):
        raise PlaybookError(f"{label} needs exactly one of `dsn` or `service`")
    if service is not None:
        if not isinstance(service, str) or not NAME.match(service):
            raise PlaybookError(f"{label}: service must be the name of a pg_service.conf entry")
        return f"service={service}"
    if not isinstance(dsn, str):
        raise PlaybookError(f"{label}: dsn must be a string")
    return dsn


def _no_unknown_keys(mapping: Mapping[Any, Any], allowed: set[str], label: str) -> None:
    unknown = sorted(str(key) for key in mapping if key not in allowed)
    if unknown:
        raise PlaybookError(f"{label}: unknown key {unknown[0]!r}; the keys are {', '.join(sorted(allowed))}")


def _labels(value: Any, label: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, (str, int, float, bool)) for k, v in value.items()
    ):
        raise PlaybookError(f"{label}: labels must map names to plain values, like {{team: payments}}")
    return {k: str(v) for k, v in value.items()}
