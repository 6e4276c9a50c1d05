"""The probes source: round trips and keepalives on the short session, then fresh connects.

The probes run before the window so they never overlap the sampler. A round-trip or keepalive
probe that fails is a note (the connect probes still run): a probe is evidence when it works.
"""

from __future__ import annotations

import pandas as pd

from playbook.collect.sources.base import Context, Contribution
from playbook.probes.keepalive import client_keepalive_settings
from playbook.probes.latency import latency_summary, measure_connects, measure_round_trips
from playbook.request import RunRequest

CONNECT_PROBES = 5
ROUND_TRIP_PROBES = 20
ROUND_TRIP_WHAT = "round-trip and keepalive probes"


class ProbesSource:
    name = "probes"
    live = True
    windowed = False

    def contribute(self, request: RunRequest, context: Context) -> Contribution:
        """round_trip_probes and connect_probes, the keepalive and latency snapshots; the short
        session ends here, before the window opens."""
        assert context.target is not None  # a live source: skipped offline
        part = Contribution(collected=["probes"])
        try:
            conn = context.session()
            part.frames["round_trip_probes"] = measure_round_trips(conn, count=ROUND_TRIP_PROBES)
            part.snapshots["keepalive_probe"] = client_keepalive_settings(conn)
        except Exception as exc:  # a probe is evidence when it works and a note when it does not
            part.failures.append({"what": ROUND_TRIP_WHAT, "error": str(exc)[:300]})
        finally:
            context.end_session()
        part.frames["connect_probes"] = measure_connects(
            context.target.dsn, count=CONNECT_PROBES, pooled=context.target.pooled
        )
        part.snapshots["latency"] = {
            "connect": latency_summary(part.frames["connect_probes"]),
            "round_trip": latency_summary(part.frames.get("round_trip_probes", pd.DataFrame())),
        }
        return part
