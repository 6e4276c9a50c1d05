"""--notify and --prometheus against real receivers: a local HTTP server, prometheus_client's parser."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from playbook.report.alerts import notify, reaches, slack_message, write_prometheus

SUMMARY: dict[str, Any] = {
    "status": "critical",
    "target": {"dsn": "host=db dbname=app user=monitor"},
    "root_causes": [
        {
            "category": "server",
            "severity": "critical",
            "confidence": 0.9,
            "summary": "restarted 3 times",
            "layer": "the server",
            "finding": "SRV-001",
        }
    ],
    "findings": [
        {"id": "SRV-001", "category": "server", "severity": "critical", "title": "restarted"},
        {"id": "NET-003", "category": "network", "severity": "info", "title": "keepalives"},
    ],
}


@pytest.fixture
def failing_receiver() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/services/T1/B2/secret-token"
    server.shutdown()


def test_a_failed_post_is_one_warning_without_the_secret(
    failing_receiver: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert notify(failing_receiver, SUMMARY, "/srv/report.html") is False
    err = capsys.readouterr().err
    assert "HTTP 500" in err and "secret-token" not in err and err.count("\n") == 1
    assert notify("not a url", SUMMARY, "/srv/report.html") is False


def test_the_message_is_slack_compatible() -> None:
    message = slack_message(SUMMARY, "/srv/report.html")
    assert message["text"].startswith("pg-session-playbook CRITICAL: most likely server")
    json.dumps(message)
    fields = [f["text"] for f in message["blocks"][1]["fields"]]
    assert fields[:2] == ["*Status*\nCRITICAL", "*Top cause*\nserver (SRV-001): restarted 3 times"]


@pytest.mark.parametrize(
    ("status", "fail_on", "alert"),
    [
        ("warning", "warning", True),
        ("warning", "critical", False),
        ("critical", "critical", True),
        ("ok", "warning", False),
        ("critical", "never", False),
        ("error", "never", True),
    ],
)
def test_alerts_follow_fail_on(status: str, fail_on: str, alert: bool) -> None:
    assert reaches(status, fail_on) is alert


def test_metrics_parse_and_replace_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "pb.prom"
    path.write_text("# an earlier run's metrics\n")
    write_prometheus(
        path, SUMMARY, finished_at=time.time(), duration_s=12.5, peak_connections=7, usable_connections=97
    )
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }
    assert samples[("pg_session_playbook_status", (("status", "critical"),))] == 1
    assert samples[("pg_session_playbook_severity", ())] == 2
    assert samples[("pg_session_playbook_findings", (("severity", "info"),))] == 1
    assert samples[("pg_session_playbook_peak_connections", ())] == 7
    assert samples[("pg_session_playbook_last_run_duration_seconds", ())] == 12.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pb.prom"]
