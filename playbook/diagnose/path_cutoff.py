"""The path's idle cut-off, measured from the sessions it took: how long they sat idle before going.

A NAT, a load balancer or a proxy that cuts idle flows does it at one idle age, so the sessions it
takes were all last active that long before they went. Two kinds of evidence show it:

- a reset the server logged (the hop sent an RST when it cut, as an application proxy or a
  firewall does): the server-log session ends at the cut, so its idle age then is the cut-off
  itself (kind "measured");
- a loss only the application saw (the hop forgot the flow silently, as a NAT does): the
  application finds it at the next query, so the idle age then is an upper bound of the
  cut-off, which may be anywhere below it (kind "at most").

Each lost session's idle age is the time from its last activity (the activity samples'
state_change of the last sample of that pid) to its end (the reset) or to the first application
loss after it (a backend never active again after that loss). A cut-off is reported only when at
least MIN_SESSIONS sessions lie within ±STEADY_SPREAD of their median (a steady value, not a
scatter of causes) and nothing on the server explains them (a kill, a timeout, a restart, logged
by the server or named by the application's SQLSTATE).

A third kind of evidence measures it directly: `playbook probe path` (probes/path.py), whose
connections were left idle on a ladder of durations with and without keepalives (the evidence's
`path_probe` frame, joined by `playbook run --path-probe DIR`). `probe_verdict` reads it: the
cut-off (measured when the end reached the idle socket, else at most the smallest failing rung) and
whether keepalives kept flows alive through it. It wins over the sessions' estimate, since it was
made for the purpose. Pure functions of evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from playbook.evidence import Evidence
from playbook.evidence.contract import PATH_PROBE
from playbook.evidence.frames import SERVER_LOG_SESSIONS
from playbook.evidence.views import (
    APP_SESSION_LOST,
    SERVER_SIDE_ENDINGS,
    app_events,
    app_samples,
    server_events,
)
from playbook.evidence.vocab import OWN_APPLICATION_NAME
from playbook.vocabulary.findings import RESET_EVENTS

# A steady cut-off: at least three sessions, each within 20 % of the median idle age.
MIN_SESSIONS = 3
STEADY_SPREAD = 0.2
# What the application's log names when the server ended a session (drivers' SQLSTATE kinds):
# such losses have a server-side reason, not a path one.
SERVER_REASON_KINDS = frozenset(
    {
        "admin_shutdown",
        "crash_shutdown",
        "cannot_connect_now",
        "idle_session_timeout",
        "idle_in_transaction_timeout",
        "transaction_timeout",
    }
)
# Keepalives must fire well inside the cut-off, and a pool let go of a connection well before it.
FIX_FRACTION = 3

Kind = Literal["measured", "at most"]


@dataclass(frozen=True)
class PathCutoff:
    """The idle age at which the path took sessions: median `seconds`, the in-band `low`..`high`,
    how many `sessions` agree, `kind` ("measured" from resets at the cut, "at most" from losses
    found at the next query) and the evidence it was read from (`source`)."""

    seconds: float
    low: float
    high: float
    sessions: int
    kind: Kind
    source: str
    # Whether keepalives kept idle flows alive through the hop (a probe compared both); None: unknown.
    keepalives_help: bool | None = None

    @property
    def fix_below_s(self) -> int:
        """A limit safely inside the cut-off (a third of it, whole seconds, at least 1)."""
        return max(1, math.floor(self.seconds / FIX_FRACTION))

    def text(self) -> str:
        """One sentence: the value, its spread, the count and the evidence."""
        qualifier = "" if self.kind == "measured" else "at most "
        what = "connections" if self.source == PROBE_SOURCE else "sessions"
        return (
            f"{qualifier}{self.seconds:.1f} s (spread {self.low:.1f}–{self.high:.1f} s over {self.sessions} "
            f"{what}, from {self.source})"
        )

    def as_evidence(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 2),
            "low_s": round(self.low, 2),
            "high_s": round(self.high, 2),
            "sessions": self.sessions,
            "kind": self.kind,
            "source": self.source,
            "keepalives_help": self.keepalives_help,
        }


PROBE_SOURCE = "playbook probe path"
SERVER_END = "server end"
NOT_A_CUT = frozenset({"connect failed", "error"})  # no idle age was tested: says nothing of a cut


@dataclass(frozen=True)
class ProbeVerdict:
    """What a `playbook probe path` found. `idle_cutoff_s`: the idle age at which flows without
    keepalives were cut (None when none was, up to `max_idle_s`); `kind` "measured" (the end reached
    the idle socket: its median age) or "at most" (found by the rung's query: the smallest failing
    rung); `survived_up_to_s` / `failed_from_s` the rungs around it; `how` the commonest ending;
    `keepalives_help` True when every connection with keepalives survived the rungs that cut the
    ones without, False when any of them was cut too, None when nothing was cut (or no keepalive
    connection was tried there); `rungs` one dict per rung."""

    max_idle_s: float
    idle_cutoff_s: float | None
    kind: Kind | None
    survived_up_to_s: float | None
    failed_from_s: float | None
    low_s: float | None
    high_s: float | None
    cut: int
    how: str | None
    keepalives_help: bool | None
    rungs: list[dict[str, Any]]
    said: str | None = None  # the commonest error of the cut connections (a FATAL's own words)

    @property
    def server_side(self) -> bool:
        """The cut was the server's own (a FATAL such as idle_session_timeout), not the path's."""
        return self.how == SERVER_END

    def as_summary(self) -> dict[str, Any]:
        """summary.json's `path` object."""
        return {
            "idle_cutoff_s": None if self.idle_cutoff_s is None else round(self.idle_cutoff_s, 2),
            "kind": self.kind,
            "keepalives_help": self.keepalives_help,
            "max_idle_s": self.max_idle_s,
            "survived_up_to_s": self.survived_up_to_s,
            "failed_from_s": self.failed_from_s,
            "how": self.how,
            "said": self.said,
            "rungs": self.rungs,
        }

    def text(self) -> str:
        """One sentence: the verdict."""
        if self.idle_cutoff_s is None:
            return f"the path kept idle connections up to {self.max_idle_s:g} s (the longest rung probed)"
        qualifier = "" if self.kind == "measured" else "at most "
        who = "the server (or a pooler) ended" if self.server_side else "the path cut"
        help_text = {
            True: "keepalives kept flows alive through it",
            False: "keepalives did not help",
            None: "whether keepalives help is unknown",
        }[self.keepalives_help]
        # From the value summary.json carries (2 decimals): 3.0501 rounds to 3.05, which is 3.0 at
        # one decimal, whereas the raw value would read 3.1 beside a summary of 3.05.
        cutoff = round(self.idle_cutoff_s, 2)
        return f"{who} idle connections at {qualifier}{cutoff:.1f} s ({self.how}); {help_text}"


def _ladder_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rungs: list[dict[str, Any]] = []
    for rung, rows in frame.groupby("rung_s", sort=True):
        entry: dict[str, Any] = {"rung_s": float(str(rung))}
        for mode, key in ((False, "without_keepalives"), (True, "with_keepalives")):
            mine = rows[rows["keepalives"] == mode]
            if mine.empty:
                entry[key] = None
                continue
            row = mine.iloc[0]
            ended_at = row["ended_at_s"]
            entry[key] = {
                "survived": bool(row["survived"]),
                "ended": None if pd.isna(row["ended"]) else str(row["ended"]),
                "seen": None if pd.isna(row["seen"]) else str(row["seen"]),
                "ended_at_s": None if pd.isna(ended_at) else round(float(ended_at), 3),
            }
        rungs.append(entry)
    return rungs


def probe_verdict(frame: pd.DataFrame) -> ProbeVerdict | None:
    """The verdict of a `playbook probe path` frame (PATH_PROBE), None when it holds no rows."""
    if frame.empty:
        return None
    tested = frame[~frame["ended"].isin(NOT_A_CUT)]
    off, on = tested[~tested["keepalives"].astype(bool)], tested[tested["keepalives"].astype(bool)]
    cut = off[~off["survived"].astype(bool)]
    max_idle = float(frame["rung_s"].max())
    rungs = _ladder_rows(frame)
    if cut.empty:
        return ProbeVerdict(max_idle, None, None, _largest(off), None, None, None, 0, None, None, rungs)
    failed_from = float(cut["rung_s"].min())
    below = off[off["survived"].astype(bool) & (off["rung_s"] < failed_from)]
    survived_up_to = float(below["rung_s"].max()) if not below.empty else None
    seen_idle = cut[cut["seen"] == "idle"]["ended_at_s"].dropna()
    if not seen_idle.empty:
        kind: Kind = "measured"
        seconds, low, high = float(seen_idle.median()), float(seen_idle.min()), float(seen_idle.max())
    else:
        kind = "at most"
        seconds, low, high = failed_from, survived_up_to or 0.0, failed_from
    how = str(cut["ended"].mode().iloc[0])
    errors = cut["error"].dropna()
    said = str(errors.mode().iloc[0]) if not errors.empty else None
    helped = on[on["rung_s"] >= failed_from]
    keepalives_help = None if helped.empty else bool(helped["survived"].astype(bool).all())
    return ProbeVerdict(
        max_idle,
        seconds,
        kind,
        survived_up_to,
        failed_from,
        low,
        high,
        len(cut),
        how,
        keepalives_help,
        rungs,
        said,
    )


def _largest(rows: pd.DataFrame) -> float | None:
    alive = rows[rows["survived"].astype(bool)]
    return float(alive["rung_s"].max()) if not alive.empty else None


def probed(evidence: Evidence) -> ProbeVerdict | None:
    """The verdict of the probe joined to this evidence (`playbook run --path-probe`), if any."""
    return probe_verdict(evidence.frame(PATH_PROBE))


def server_side_reason(evidence: Evidence) -> bool:
    """Whether the server ended sessions in the window (logged, or named by the app's SQLSTATE)."""
    if not server_events(evidence, *SERVER_SIDE_ENDINGS).empty:
        return True
    return not app_events(evidence, *SERVER_REASON_KINDS).empty


def _idle_samples(evidence: Evidence) -> pd.DataFrame:
    samples = app_samples(evidence)
    if samples.empty:
        return samples
    own = samples["application_name"].fillna("").astype(str).str.startswith(OWN_APPLICATION_NAME)
    samples = samples[~own]
    return samples.assign(
        tick_ts=pd.to_datetime(samples["tick_ts"], utc=True),
        state_change=pd.to_datetime(samples["state_change"], utc=True),
    ).sort_values("tick_ts")


def _reset_ages(evidence: Evidence, samples: pd.DataFrame) -> list[float]:
    """Idle age at the reset, for each application session the server log saw end in a reset."""
    sessions = evidence.frame(SERVER_LOG_SESSIONS)
    if sessions.empty or samples.empty:
        return []
    reset = sessions[sessions["ended_by"].isin(RESET_EVENTS) & sessions["end"].notna()]
    ages: list[float] = []
    for _, session in reset.iterrows():
        end = pd.Timestamp(session["end"])
        start = pd.Timestamp(session["start"]) if pd.notna(session["start"]) else None
        mine = samples[(samples["pid"] == session["pid"]) & (samples["tick_ts"] <= end)]
        if start is not None:
            mine = mine[mine["tick_ts"] >= start]  # a pid is reused by later sessions
        if mine.empty or str(mine.iloc[-1]["state"]) != "idle":
            continue
        last_active = pd.Timestamp(mine.iloc[-1]["state_change"])
        if pd.notna(last_active) and last_active <= end:
            ages.append((end - last_active).total_seconds())
    return ages


def _found_lost_ages(evidence: Evidence, samples: pd.DataFrame) -> list[float]:
    """Idle age at the first application loss after each backend's last activity, for backends
    never active again (idle to the end of the window or gone): the flow was gone by then."""
    lost = app_events(evidence, *APP_SESSION_LOST)
    if lost.empty or samples.empty:
        return []
    losses = pd.to_datetime(lost["ts"], utc=True).dropna().sort_values()
    ages: list[float] = []
    for _, rows in samples.groupby("pid"):
        last = rows.iloc[-1]
        if str(last["state"]) != "idle" or pd.isna(last["state_change"]):
            continue
        last_active = pd.Timestamp(last["state_change"])
        after = losses[losses > last_active]
        if not after.empty:
            ages.append((after.iloc[0] - last_active).total_seconds())
    return ages


def _steady(ages: list[float]) -> tuple[float, float, float, int] | None:
    if len(ages) < MIN_SESSIONS:
        return None
    median = float(pd.Series(ages).median())
    if median <= 0:
        return None
    band = [a for a in ages if abs(a - median) <= STEADY_SPREAD * median]
    if len(band) < MIN_SESSIONS:
        return None
    return median, min(band), max(band), len(band)


def path_cutoff(evidence: Evidence) -> PathCutoff | None:
    """The path's idle cut-off from the sessions it took, or None when the evidence shows none.

    A probe's cut (probe_verdict, not the server's own) comes first: it was measured on purpose.
    Resets at the cut (server log sessions ended by a reset, aged from the activity samples) give
    a measured value; without them, losses the application found at the next query give an upper
    bound ("at most"). None when fewer than MIN_SESSIONS agree within ±STEADY_SPREAD, or when a
    server-side reason (kill, timeout, restart) could explain the losses.
    """
    verdict = probed(evidence)
    if verdict is not None and verdict.idle_cutoff_s is not None and not verdict.server_side:
        return PathCutoff(
            verdict.idle_cutoff_s,
            verdict.low_s if verdict.low_s is not None else verdict.idle_cutoff_s,
            verdict.high_s if verdict.high_s is not None else verdict.idle_cutoff_s,
            verdict.cut,
            verdict.kind or "at most",
            PROBE_SOURCE,
            verdict.keepalives_help,
        )
    if server_side_reason(evidence):
        return None
    samples = _idle_samples(evidence)
    steady = _steady(_reset_ages(evidence, samples))
    if steady:
        return PathCutoff(*steady, kind="measured", source="server-log resets and activity samples")
    steady = _steady(_found_lost_ages(evidence, samples))
    if steady:
        return PathCutoff(*steady, kind="at most", source="application-log losses and activity samples")
    return None
