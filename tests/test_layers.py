"""The layers between the application and the server, from evidence recorded on real incidents:
PgBouncer's findings, the layer a verdict names, and the timeout chain."""

from __future__ import annotations

import copy
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from playbook.diagnose import diagnose_all, rank_root_causes  # noqa: E402
from playbook.diagnose.chain import broken_links, chain_links, has_pooler, timeout_chain  # noqa: E402
from playbook.diagnose.findings import Severity  # noqa: E402
from playbook.evidence import Evidence  # noqa: E402
from playbook.notebook import chain_verdict, next_step, timeout_chain_table  # noqa: E402
from playbook.plots_layers import pooler_closes, pooler_pools, timeout_chain_figure  # noqa: E402

RECORDED = Path(__file__).parent / "data" / "evidence"


def recorded(name: str) -> Evidence:
    return Evidence.load(RECORDED / name)


def test_pgbouncer_closing_idle_clients_is_named_as_the_layer_and_not_the_network() -> None:
    """PgBouncer's client_idle_timeout closed what the application's pool still held: the report
    says PgBouncer did it (BNC-001), never 'the path dropped them' (NET-002)."""
    evidence = recorded("pgbouncer_idle_timeout")
    found = diagnose_all(evidence)
    ids = {f.id for f in found}
    assert "BNC-001" in ids and "NET-002" not in ids
    top = rank_root_causes(found)[0]
    assert top["category"] == "timeout" and top["layer"] == "PgBouncer" and top["finding"] == "BNC-001"
    assert "Closed by:** PgBouncer" in next_step(evidence).data
    bnc = next(f for f in found if f.id == "BNC-001")
    assert bnc.severity is Severity.CRITICAL and "client_idle_timeout" in bnc.recommendation


def test_pgbouncer_saturation_is_pool_config_at_the_pooler() -> None:
    found = diagnose_all(recorded("pgbouncer_saturation"))
    ids = {f.id for f in found}
    assert "BNC-004" in ids and "NET-002" not in ids
    top = rank_root_causes(found)[0]
    assert top["category"] == "pool_config" and top["layer"] == "PgBouncer"


def test_pure_recycling_of_server_connections_is_never_an_incident() -> None:
    """The same evidence with only PgBouncer's normal recycling left in its log: no harm, no cause."""
    evidence = copy.deepcopy(recorded("pgbouncer_idle_timeout"))
    log = evidence.frames["pgbouncer_log_events"]
    evidence.frames["pgbouncer_log_events"] = log[log["recycling"].fillna(False).astype(bool)]
    evidence.frames["app_log_events"] = evidence.app_log_events.iloc[0:0]
    found = diagnose_all(evidence)
    assert not [f for f in found if f.id.startswith("BNC-") and f.severity is not Severity.INFO]


def test_the_chain_names_pgbouncer_as_the_broken_link() -> None:
    evidence = recorded("pgbouncer_idle_timeout")
    assert has_pooler(evidence)
    layers = [(v.layer, v.setting) for v in timeout_chain(evidence)]
    assert layers[1:3] == [("pooler", "client_idle_timeout"), ("pooler", "server_idle_timeout")]
    client_idle = timeout_chain(evidence)[1]
    assert client_idle.seconds == 2 and client_idle.source == "configured"
    broken = broken_links(evidence)
    assert (
        broken and broken[0].after.setting == "client_idle_timeout" and broken[0].fix_layer == "client pool"
    )
    assert "client_idle_timeout" in chain_verdict(evidence).data
    assert not broken[0].certain  # psycopg's default idle limit: at risk until the pool's own is known
    table = timeout_chain_table(evidence)
    assert {"layer", "setting", "seconds", "source"} <= set(table.columns)


def test_without_a_pooler_the_server_timeout_is_the_link() -> None:
    evidence = recorded("idle_session_timeout")
    assert not has_pooler(evidence)
    links = chain_links(evidence)
    assert links[0].after.setting == "idle_session_timeout" and not links[0].holds
    assert links[0].fix_layer == "client pool"


def test_a_healthy_service_keeps_its_chain() -> None:
    evidence = recorded("healthy")
    assert all(link.holds for link in chain_links(evidence)[:-1])  # the path's link depends on keepalives


@pytest.mark.parametrize("name", ["pgbouncer_idle_timeout", "pgbouncer_saturation", "healthy"])
def test_layer_figures_draw_or_say_none(name: str) -> None:
    evidence = recorded(name)
    for draw in (timeout_chain_figure, pooler_pools, pooler_closes):
        figure = draw(evidence)
        if name == "healthy" and draw is not timeout_chain_figure:
            assert figure is None, draw.__name__  # no PgBouncer was given: no PgBouncer figure
            continue
        assert figure is not None and [ax.get_title() for ax in figure.axes if ax.get_title()], draw.__name__


def test_pooler_frames_follow_their_schema() -> None:
    from playbook.evidence.pgbouncer_frames import SCHEMAS

    evidence = recorded("pgbouncer_saturation")
    for name, frame in evidence.frames.items():
        if name.startswith("pgbouncer_"):
            assert SCHEMAS[name].missing(frame) == [], name
    assert isinstance(evidence.frame("pgbouncer_pools"), pd.DataFrame)
