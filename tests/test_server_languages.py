"""Real servers that speak another language: the same incidents read the same in every format.

Debian's PostgreSQL carries PostgreSQL's message catalogs; the test makes the locales it needs
(localedef, as root) and runs one server per language with lc_messages set, writing stderr,
csvlog and jsonlog at once. The same incidents (an idle session ended by idle_session_timeout,
an idle transaction ended by idle_in_transaction_session_timeout, a pg_terminate_backend, a
login refused by a role's connection limit, a statement_timeout) must give the same events,
the same sessions and the same causes of their ends as the English server, in all three files,
and the same findings from the diagnosis.
"""

from __future__ import annotations

import glob
import subprocess
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from playbook.collect.serverlog import read_server_logs
from playbook.lab.server import LabServer
from playbook.vocabulary.translations import language_of_locale

DEBIAN_BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
LOCALES = ["C", "ru_RU.UTF-8", "zh_CN.UTF-8", "de_DE.UTF-8", "ja_JP.UTF-8"]
TIMING_DEPENDENT = (
    "parameter_changed", "config_reload", "connection_received", "connection_authorized", "disconnection",
)  # fmt: skip
FORMATS = {"stderr": "postgresql.log", "csvlog": "postgresql.csv", "jsonlog": "postgresql.json"}

pytestmark = pytest.mark.skipif(
    not DEBIAN_BINS, reason="needs Debian's postgresql (its catalogs): make install installs it as root"
)


def ensure_locale(name: str) -> None:
    """The locale exists, made with localedef from Debian's locales sources when missing."""
    if name == "C":
        return
    have = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.lower().split()
    if name.lower().replace("utf-8", "utf8") in have:
        return
    base, charset = name.split(".")
    done = subprocess.run(["localedef", "-i", base, "-f", charset, name], capture_output=True, text=True)
    assert done.returncode in (0, 1), f"localedef {name}: {done.stderr}"  # 1: made, with warnings


def wait_until(condition: object, what: str, deadline_s: float = 30) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def sessions_of(server: LabServer, application: str) -> int:
    with server.admin() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application]
        ).fetchone()
    return int(row[0]) if row else 0


def run_incidents(server: LabServer, locale: str, out: Path) -> dict[str, Path]:
    """The incidents, on a server already speaking `locale`; copies of what they logged."""
    server.alter_system(
        {
            "lc_messages": locale,
            "log_destination": "stderr,csvlog,jsonlog",
            "idle_session_timeout": "1s",
            "idle_in_transaction_session_timeout": "1s",
        }
    )

    def speaks() -> bool:
        with server.admin() as conn:
            return conn.execute("SHOW lc_messages").fetchone() == (locale,)

    wait_until(speaks, f"lc_messages = {locale}")
    logs = server.log_dir
    wait_until(lambda: all((logs / name).exists() for name in FORMATS.values()), "the three log files")
    offsets = {name: (logs / name).stat().st_size for name in FORMATS.values()}
    limited = server.create_role("limited_role", "CONNECTION LIMIT 1")

    said: list[str] = []  # what the clients were told, as node-postgres prints it: "error: <message>"

    def told(conn: psycopg.Connection) -> None:
        with pytest.raises(psycopg.OperationalError) as raised:
            conn.execute("SELECT 1")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        said.append(f"{stamp} error: {str(raised.value).splitlines()[0]}")

    idle = psycopg.connect(server.dsn(), application_name="idle_app")
    wait_until(lambda: sessions_of(server, "idle_app") == 0, "idle_session_timeout")
    told(idle)
    idle.close()
    in_transaction = psycopg.connect(server.dsn(), application_name="iit_app")
    in_transaction.execute("SELECT 1")
    wait_until(lambda: sessions_of(server, "iit_app") == 0, "idle_in_transaction_session_timeout")
    in_transaction.close()
    killed = psycopg.connect(server.dsn(), application_name="killed_app", autocommit=True)
    with server.admin() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'killed_app'"
        )
    wait_until(lambda: sessions_of(server, "killed_app") == 0, "the terminated session to end")
    told(killed)
    killed.close()
    with psycopg.connect(limited, application_name="first_app", autocommit=True) as first:
        first.execute("SET idle_session_timeout = 0")
        with pytest.raises(psycopg.OperationalError):  # a refused login carries no sqlstate in psycopg
            psycopg.connect(limited, application_name="second_app")
    with psycopg.connect(server.dsn(), application_name="slow_app", autocommit=True) as slow:
        slow.execute("SET statement_timeout = 100")
        with pytest.raises(psycopg.errors.QueryCanceled):
            slow.execute("SELECT pg_sleep(2)")
    server.down()  # flushes the logs and adds the shutdown lines, in the same language
    copies = {"app": out / "app.log"}
    copies["app"].write_text("\n".join(said) + "\n", "utf-8")
    for fmt, name in FORMATS.items():
        data = (logs / name).read_bytes()[offsets[name] :]
        copies[fmt] = out / name
        copies[fmt].write_bytes(data)
    return copies


def what_was_read(path: Path, language: str | None = None) -> dict[str, object]:
    evidence = read_server_logs([path], language=language)
    events = Counter(evidence.events["event"])
    sessions = evidence.sessions
    ended = Counter(
        (row.application, row.ended_by) for row in sessions.itertuples() if row.application.endswith("_app")
    )
    return {
        # session lines count the test's own polling sessions too, which timing decides
        "events": {e: n for e, n in events.items() if e not in TIMING_DEPENDENT},
        "ended": dict(ended),
        "language": next(iter(evidence.summary["languages"].values())),
        "warnings": evidence.warnings,
    }


@pytest.fixture(scope="module")
def incidents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Every locale's incidents, once per module: one Debian server each, a few seconds each."""
    bin_dir = Path(DEBIAN_BINS[-1]).parent
    out: dict[str, dict[str, Path]] = {}
    for locale in LOCALES:
        ensure_locale(locale)
        base = tmp_path_factory.mktemp(f"lang-{locale.split('.')[0]}")
        server = LabServer(base / "lab", bin_dir=bin_dir)
        server.up()
        try:
            out[locale] = run_incidents(server, locale, base)
        finally:
            server.destroy()
    return out


def test_the_english_server_gives_every_incident(incidents: dict[str, dict[str, Path]]) -> None:
    read = what_was_read(incidents["C"]["stderr"])
    events = read["events"]
    assert isinstance(events, dict)
    for event in (
        "idle_session_timeout",
        "idle_in_transaction_timeout",
        "admin_terminate",
        "role_conn_limit",
        "statement_timeout",
    ):
        assert events.get(event) == 1, (event, events)
    assert read["ended"] == {
        ("idle_app", "idle_session_timeout"): 1,
        ("iit_app", "idle_in_transaction_timeout"): 1,
        ("killed_app", "admin_terminate"): 1,
        ("first_app", ""): 1,
        ("second_app", ""): 1,  # refused at login: its FATAL is the event above
        ("slow_app", ""): 1,
    }


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("locale", LOCALES[1:])
def test_a_translated_log_reads_as_the_english_one(
    incidents: dict[str, dict[str, Path]], locale: str, fmt: str
) -> None:
    english = what_was_read(incidents["C"][fmt])
    translated = what_was_read(incidents[locale][fmt])
    assert translated["language"] == language_of_locale(locale), translated["language"]
    assert translated["events"] == english["events"]
    assert translated["ended"] == english["ended"]
    assert translated["warnings"] == english["warnings"] == []


@pytest.mark.parametrize("locale", LOCALES[1:])
def test_the_server_s_lc_messages_reads_the_log_without_guessing(
    incidents: dict[str, dict[str, Path]], locale: str
) -> None:
    given = what_was_read(incidents[locale]["stderr"], language=language_of_locale(locale))
    english = what_was_read(incidents["C"]["stderr"])
    assert given["events"] == english["events"]


@pytest.mark.parametrize(("locale", "encoding"), [("ru_RU.UTF-8", "cp1251"), ("zh_CN.UTF-8", "gbk")])
def test_a_log_in_a_windows_code_page_is_decoded_not_dropped(
    incidents: dict[str, dict[str, Path]], locale: str, encoding: str, tmp_path: Path
) -> None:
    """A Windows server writes its log in the OS code page: the same log, re-encoded, reads the same."""
    source = incidents[locale]["stderr"]
    legacy = tmp_path / "postgresql.log"
    legacy.write_bytes(source.read_text("utf-8").encode(encoding))
    with pytest.raises(UnicodeDecodeError):
        legacy.read_bytes().decode("utf-8")
    read = what_was_read(legacy)
    assert read["events"] == what_was_read(source)["events"]
    assert read["ended"] == what_was_read(source)["ended"]
    assert encoding in str(read["language"]) or "gb18030" in str(read["language"])


def test_level_words_of_an_unknown_language_are_a_warning_not_a_quiet_day(
    incidents: dict[str, dict[str, Path]], tmp_path: Path
) -> None:
    """A language no catalog covers (here: Russian with its level words replaced by made-up
    ones) parses but says nothing known: the read warns and names the words."""
    text = incidents["ru_RU.UTF-8"]["stderr"].read_text("utf-8")
    for mine, made_up in (("СООБЩЕНИЕ", "ZAPIS"), ("ВАЖНО", "SMRTELNO"), ("ОШИБКА", "GRESKA")):
        text = text.replace(f"{mine}:  ", f"{made_up}:  ")
    odd = tmp_path / "postgresql.log"
    odd.write_text(text, "utf-8")
    evidence = read_server_logs([odd], prefix="%m [%p] %q%u@%d ")
    assert any("level words in a language" in w and "ZAPIS" in w for w in evidence.warnings), (
        evidence.warnings
    )
    guessed = read_server_logs([odd])  # the prefix is still recognised
    assert guessed.prefix == "%m [%p] %q%u@%d "
    assert guessed.warnings


@pytest.mark.parametrize("locale", LOCALES[1:])
def test_a_translated_log_gives_the_english_findings(
    incidents: dict[str, dict[str, Path]], locale: str
) -> None:
    """The diagnosis of the logs alone (offline): the same findings, in every format."""
    from playbook.collect.collection import collect_evidence
    from playbook.diagnose import diagnose_all
    from playbook.request import RunRequest

    def findings(path: Path) -> list[tuple[str, str]]:
        evidence = collect_evidence(None, RunRequest(duration=0, server_logs=(path,), progress=False))
        return sorted((f.id, f.severity.value) for f in diagnose_all(evidence))

    for fmt in FORMATS:
        english = findings(incidents["C"][fmt])
        # the idle transaction (LEAK-005), the role limit (POOL-003), the kill (SRV-001), the idle
        # session (TMO-001), the statement timeout (TMO-004)
        assert {"LEAK-005", "POOL-003", "SRV-001", "TMO-001", "TMO-004"} <= {i for i, _ in english}, english
        assert findings(incidents[locale][fmt]) == english, (fmt, locale)


def test_an_unreadable_language_is_said_on_the_verdict_line(
    incidents: dict[str, dict[str, Path]], tmp_path: Path
) -> None:
    """Offline, a log in words no catalog knows: evidence_warnings says so, and so does the
    verdict line, instead of 'no cause found in this window'."""
    from playbook.collect.collection import collect_evidence
    from playbook.report.summary import evidence_warnings
    from playbook.report.verdict import verdict_line
    from playbook.request import RunRequest

    text = incidents["ru_RU.UTF-8"]["stderr"].read_text("utf-8")
    for mine, made_up in (("СООБЩЕНИЕ", "ZAPIS"), ("ВАЖНО", "SMRTELNO"), ("ОШИБКА", "GRESKA")):
        text = text.replace(f"{mine}:  ", f"{made_up}:  ")
    odd = tmp_path / "postgresql.log"
    odd.write_text(text, "utf-8")
    evidence = collect_evidence(None, RunRequest(duration=0, server_logs=(odd,), progress=False))
    warnings = evidence_warnings(evidence)
    assert any("no catalog" in w and "SMRTELNO" in w for w in warnings), warnings
    line = verdict_line({"status": "ok", "root_causes": [], "evidence_warnings": warnings})
    assert line.startswith("OK: no cause of closed sessions found, but 1 log(s) are written in a language"), (
        line
    )


@pytest.mark.parametrize("locale", LOCALES[1:])
def test_the_application_log_relays_the_translated_message(
    incidents: dict[str, dict[str, Path]], locale: str
) -> None:
    """What the server told the clients, in its language, printed bare by the application (no
    class name, no SQLSTATE): the same kinds as in English."""
    from playbook.collect.applog import read_app_logs

    def kinds(path: Path) -> list[str]:
        return list(read_app_logs([path]).events["kind"])

    english = kinds(incidents["C"]["app"])
    assert english == ["idle_session_timeout", "admin_shutdown"], english
    text = incidents[locale]["app"].read_text("utf-8")
    assert "idle-session" not in text or locale.startswith("zh"), text  # zh_CN 15 leaves it English
    assert kinds(incidents[locale]["app"]) == english, text


def test_pgbouncer_s_log_relays_the_translated_refusal(tmp_path: Path) -> None:
    """PgBouncer logs the server's refusal of its own login as the server wrote it (here in
    Russian): the reason is read through PostgreSQL's translation, as in English."""
    from playbook.collect.pgbouncer_log import read_pgbouncer_logs
    from playbook.lab.pgbouncer_process import PgBouncer
    from playbook.lab.server import APP_ROLE

    ensure_locale("ru_RU.UTF-8")
    server = LabServer(tmp_path / "lab", bin_dir=Path(DEBIAN_BINS[-1]).parent)
    server.up()
    try:
        server.alter_system({"lc_messages": "ru_RU.UTF-8"})
        with server.admin() as admin:
            admin.execute(f"ALTER ROLE {APP_ROLE} CONNECTION LIMIT 0")
        with PgBouncer(tmp_path / "bnc", server) as bouncer:
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(bouncer.dsn(), connect_timeout=10)

            def logged() -> bool:
                return "слишком много подключений" in bouncer.log_file.read_text("utf-8", "replace")

            wait_until(logged, "PgBouncer to log the server's refusal")
            events = read_pgbouncer_logs([bouncer.log_file]).events
    finally:
        server.destroy()
    refused = events[events["kind"] == "server_login_failed"]
    assert not refused.empty, events[["kind", "reason"]].to_string()
    assert set(refused["reason_key"]) == {"server_too_many_clients"}, refused[["reason_key", "reason"]]
