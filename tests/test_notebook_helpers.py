"""The notebook helpers (playbook.notebook) and the figures (playbook.plots) on recorded evidence.

Every helper must give the reader something on every incident and on an empty window: a table, a
figure, or a sentence that says there is nothing, never an exception.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from IPython.display import Markdown  # noqa: E402

from playbook import notebook, plots  # noqa: E402
from playbook.errors import PlaybookError  # noqa: E402
from playbook.evidence import Evidence  # noqa: E402

RECORDED = Path(__file__).parent / "data" / "evidence"
INCIDENTS = sorted(p.name for p in RECORDED.iterdir() if p.is_dir())

TABLES = (
    notebook.server_overview,
    notebook.unavailable,
    notebook.root_causes,
    notebook.oldest_idle_in_transaction,
    notebook.log_events_table,
    notebook.app_errors_table,
    notebook.connection_trends,
    notebook.pool_sizes,
    notebook.limits_table,
    notebook.latency_table,
    notebook.keepalive_table,
    notebook.gaps_table,
)
FIGURES = (
    plots.connections_by_state,
    plots.idle_in_transaction_ages,
    plots.incident_timeline,
    plots.connections_by_application,
    plots.idle_age_histogram,
    plots.connect_latency,
)


@pytest.fixture(params=INCIDENTS)
def recorded(request: pytest.FixtureRequest) -> Evidence:
    return Evidence.load(RECORDED / request.param)


def test_every_table_reads_every_incident(recorded: Evidence) -> None:
    for table in TABLES:
        result = table(recorded)
        assert isinstance(result, pd.DataFrame), table.__name__
        assert len(result.columns), table.__name__
    assert isinstance(notebook.settings_table(recorded, ["idle_session_timeout"]), pd.DataFrame)
    assert isinstance(notebook.next_step(recorded), Markdown)


def test_every_figure_draws_every_incident(recorded: Evidence) -> None:
    for draw in FIGURES:
        figure = draw(recorded)
        titled = [ax.get_title() for ax in figure.axes if ax.get_title()]
        assert titled, f"{draw.__name__} has no title"
        plt.close(figure)


def test_an_empty_window_still_reads(tmp_path: Path) -> None:
    empty = Evidence()
    for table in TABLES:
        assert isinstance(table(empty), pd.DataFrame), table.__name__
    for draw in FIGURES:
        plt.close(draw(empty))
    assert "No root cause" in notebook.next_step(empty).data


def test_findings_table_says_when_there_is_none() -> None:
    assert notebook.findings_table([]).iloc[0, 0].startswith("no finding")
    found = notebook.findings(Evidence.load(RECORDED / "leak"), category="leak")
    table = notebook.findings_table(found)
    assert {"LEAK-001", "LEAK-002"} <= set(table.index)


def test_next_step_points_at_the_notebook_of_the_top_cause() -> None:
    text = notebook.next_step(Evidence.load(RECORDED / "idle_session_timeout")).data
    assert "timeout" in text and "[timeouts.html](timeouts.html)" in text
    server = notebook.next_step(Evidence.load(RECORDED / "server_restart")).data
    assert "triage.html" not in server and "this page" in server


def test_figures_have_integer_count_ticks_one_row_per_event_kind_and_say_none() -> None:
    restart = Evidence.load(RECORDED / "server_restart")
    timeline = plots.incident_timeline(restart)
    labels = [t.get_text() for t in timeline.axes[1].get_yticklabels()]
    assert len(labels) == len(set(labels)) and "playbook session lost" in labels
    assert all(float(t).is_integer() for t in timeline.axes[0].get_yticks())
    empty = plots.idle_in_transaction_ages(restart)
    assert any(t.get_text().startswith("none:") for t in empty.axes[0].texts)
    leak = plots.connections_by_application(Evidence.load(RECORDED / "leak"))
    assert any("max_connections" in t.get_text() for t in leak.axes[0].texts)  # the limit line's label
    assert all(float(t).is_integer() for t in leak.axes[0].get_yticks())
    for figure in (timeline, empty, leak):
        plt.close(figure)


def test_a_missing_evidence_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError, match="no evidence"):
        notebook.load_or_collect(evidence_dir=str(tmp_path / "nothing"))


def test_setting_seconds_for_a_limit_line() -> None:
    evidence = Evidence.load(RECORDED / "idle_session_timeout")
    assert notebook.setting_seconds(evidence, "idle_session_timeout") == evidence.setting_s(
        "idle_session_timeout"
    )
    assert notebook.setting_seconds(evidence, "no_such_setting") is None


def test_a_page_diagnoses_its_evidence_once_and_each_evidence_apart() -> None:
    from playbook.diagnose import diagnose_all

    leak = Evidence.load(RECORDED / "leak")
    healthy = Evidence.load(RECORDED / "healthy")
    first = notebook.diagnose_all(leak)
    assert [f.id for f in first] == [f.id for f in diagnose_all(leak)] and first
    first.clear()  # a caller's list is its own: the cached answer is untouched
    again = notebook.diagnose_all(leak)
    assert again and [f.id for f in again] == [f.id for f in diagnose_all(leak)]
    assert [f.id for f in notebook.diagnose_all(healthy)] == [f.id for f in diagnose_all(healthy)]
    key = id(leak)
    del leak, first, again
    assert key not in notebook._diagnosed  # gone with its evidence
