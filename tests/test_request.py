"""One request: `playbook run`'s flags, a notebook's parameters and a fleet target's keys build the
same RunRequest through RunRequest.build, and every bad value is one sentence naming the option."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from playbook import cli, notebook
from playbook.errors import PlaybookError
from playbook.fleet.targets import Overrides, parse_targets
from playbook.request import RunRequest, notebook_parameters
from playbook.target import parse_dsn

# What to read, where, which window, zones, prefix, pooler: what the three entry points share.
SHARED = (
    "dsn", "offline", "duration", "interval", "since", "until", "server_logs", "app_logs",
    "pgbouncer_dsn", "pgbouncer_logs", "log_prefix", "log_tz", "app_tz", "app",
)  # fmt: skip

OPTIONS: dict[str, Any] = {
    "dsn": "host=127.0.0.1 port=5432 dbname=orders user=monitor",
    "duration": 12,
    "interval": 0.5,
    "server_log": ["/var/log/postgresql/a.log", "/var/log/postgresql/b.log"],
    "app_log": ["/srv/app/app.log"],
    "pgbouncer": "host=127.0.0.1 port=6432 dbname=pgbouncer user=monitor",
    "pgbouncer_log": ["/var/log/pgbouncer/pgbouncer.log"],
    "log_tz": "Asia/Shanghai",
    "app_tz": "+05:30",
    "prefix": "%m [%p] %q%u@%d ",
    "app": "checkout",
    "since": "2026-03-01T10:00:00+08:00",
    "until": "2026-03-01T11:30:00",
}


def from_cli(options: dict[str, Any]) -> RunRequest:
    argv = ["run"]
    for key, value in options.items():
        for item in value if isinstance(value, list) else [value]:
            argv += [f"--{key.replace('_', '-')}", str(item)]
    args = cli.build_parser(only="run").parse_args(argv)
    return cli.request_of_args(args)


def from_notebook(options: dict[str, Any]) -> RunRequest:
    return notebook.request_of(**options)


def from_fleet(options: dict[str, Any]) -> RunRequest:
    (target,) = parse_targets({"targets": [{"name": "t", **options}]}, where="t.yaml", overrides=Overrides())
    return target.request


def shared(request: RunRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in SHARED}


def test_the_three_entry_points_build_the_same_request() -> None:
    built = [from_cli(OPTIONS), from_notebook(OPTIONS), from_fleet(OPTIONS)]
    assert shared(built[0]) == shared(built[1]) == shared(built[2])
    request = built[0]
    assert request.server_logs == (Path("/var/log/postgresql/a.log"), Path("/var/log/postgresql/b.log"))
    assert request.since == datetime(2026, 3, 1, 2, 0, tzinfo=timezone.utc)
    assert request.until == datetime(2026, 3, 1, 11, 30, tzinfo=timezone.utc)  # no zone: UTC
    assert (request.log_tz, request.app_tz, request.log_prefix) == (
        "Asia/Shanghai",
        "+05:30",
        "%m [%p] %q%u@%d ",
    )
    assert (request.duration, request.interval) == (12.0, 0.5)


def test_the_notebook_parameters_of_a_request_build_it_again() -> None:
    """What `playbook run` injects into a notebook reads back, through load_or_collect's
    request_of, as the request it came from (the password aside: it is never a parameter)."""
    request = from_cli(OPTIONS)
    parameters = notebook_parameters(request, "/tmp/evidence")
    parameters.pop("evidence_dir")
    again = notebook.request_of(**parameters)
    assert parse_dsn(again.dsn or "") == parse_dsn(request.dsn or "")  # the same DSN, as libpq spells it
    assert shared(dataclasses.replace(again, dsn=request.dsn)) == shared(request)


def test_defaults_and_empty_strings_mean_not_given() -> None:
    request = RunRequest.build(since="", until="", log_tz="", app_tz="", prefix="", app="", pgbouncer="")
    assert request == RunRequest()
    assert request.interval == 1.0 and request.notebooks == ("triage",)
    assert RunRequest.build(duration=2, interval=5).interval == 2.0  # never a sample beyond the window


def test_a_request_is_frozen_and_its_repr_never_shows_the_dsn() -> None:
    request = RunRequest.build(dsn="host=db password=s3cret-Pw", password_allowed=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.duration = 5  # type: ignore[misc]
    assert "s3cret" not in repr(request) and "s3cret" not in request.public_dsn


BAD: dict[str, tuple[dict[str, Any], str]] = {
    "duration not a number": ({"duration": "abc"}, "duration: 'abc' is not a number of seconds"),
    "negative duration": ({"duration": -1}, "duration: -1 must be a positive number of seconds"),
    "infinite interval": ({"interval": "inf"}, "interval: 'inf' must be a positive number of seconds"),
    "a boolean duration": ({"duration": True}, "duration: True is not a number of seconds"),
    "zero jobs": ({"jobs": 0}, "jobs: 0 must be 1 or more"),
    "since garbage": ({"since": "yesterday"}, "since: 'yesterday' is neither a duration"),
    "until before since": ({"since": "2h", "until": "3h"}, "until must be later than since"),
    "unknown log zone": ({"log_tz": "Mars/Olympus"}, "log_tz: unknown time zone 'Mars/Olympus'"),
    "unknown app zone": ({"app_tz": "CST"}, "app_tz: unknown time zone 'CST'"),
    "prefix not text": ({"prefix": 5}, "prefix must be a string, not int"),
    "unknown notebook": ({"notebooks": "triage,astrology"}, "unknown notebook 'astrology'"),
    "no notebook named": ({"notebooks": ","}, "notebooks names no notebook"),
    "fail_on": ({"fail_on": "sometimes"}, "fail_on must be one of critical, warning, never"),
    "password in dsn": ({"dsn": "host=db password=hunter2"}, "dsn has a password in it"),
    "password in a URL": ({"dsn": "postgresql://u:hunter2@db/x"}, "dsn has a password in it"),
    "password in pgbouncer": ({"pgbouncer": "dbname=pgbouncer password=hunter2"}, "pgbouncer has a password"),
    "malformed dsn": ({"dsn": "host=db port"}, "dsn: the DSN is malformed"),
    "logs not paths": ({"server_log": [1, 2]}, "server_log must be a list of file paths"),
    "notify not a URL": ({"notify": "slack"}, "notify: 'slack' is not an http(s) URL"),
    "offline with a dsn": ({"offline": True, "dsn": "host=db"}, "offline reads logs only"),
    "offline without logs": ({"offline": True}, "offline diagnoses from logs: give server_log"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_values_are_one_sentence_naming_the_option(case: str) -> None:
    options, expected = BAD[case]
    with pytest.raises(PlaybookError) as raised:
        RunRequest.build(**options)
    message = str(raised.value)
    assert message.startswith(expected), message
    assert "\n" not in message and "hunter2" not in message


def test_the_cli_names_flags_and_the_others_name_keys() -> None:
    with pytest.raises(PlaybookError, match=r"^--until must be later than --since$"):
        RunRequest.build(since="2h", until="3h", spelled="flag")
    with pytest.raises(PlaybookError, match=r"^--offline diagnoses from logs: give --server-log"):
        RunRequest.build(offline=True, spelled="flag")
    with pytest.raises(PlaybookError, match=r"^since: "):
        notebook.request_of(since="soon")
    with pytest.raises(PlaybookError, match=r"^t.yaml: target 't': log_tz: unknown time zone"):
        from_fleet({"service": "x", "log_tz": "Nowhere/Land"})


def test_relative_times_count_back_from_now() -> None:
    request = RunRequest.build(since="90m")
    assert request.since is not None
    assert abs(datetime.now(timezone.utc) - timedelta(minutes=90) - request.since) < timedelta(seconds=30)


def test_notebooks_all_relevant_or_names() -> None:
    everything = RunRequest.build(notebooks="all").notebooks
    assert everything[0] == "triage" and len(everything) == 5
    relevant = RunRequest.build(notebooks="relevant")
    assert relevant.notebooks == everything and relevant.relevant_only
    assert RunRequest.build(notebooks="leaks, triage,leaks").notebooks == ("leaks", "triage")
    assert RunRequest.build(notebooks=["network"]).notebooks == ("network",)
