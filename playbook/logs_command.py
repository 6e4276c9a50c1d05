"""`playbook logs PATH...`: what the server logs say ended the sessions, without a database.

A table per category and event (counts, first and last seen, who was hit) on a terminal, or
with --json the reader's summary as one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from playbook.collect import log_events
from playbook.collect.serverlog import FORMATS, read_server_logs
from playbook.errors import PlaybookError
from playbook.evidence.zones import zone_named

# Show a progress bar from this much input on (smaller logs are read in well under a second).
PROGRESS_FROM_BYTES = 50 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="server log files (plain, .gz, .bz2 or .xz)")
    parser.add_argument(
        "--format", dest="fmt", choices=FORMATS, default="auto", help="log format (default: detect it)"
    )
    parser.add_argument(
        "--prefix",
        metavar="LOG_LINE_PREFIX",
        help="the server's log_line_prefix, for stderr logs (default: try the common ones)",
    )
    parser.add_argument(
        "--since", metavar="T", help="ignore entries before this time (ISO 8601; UTC if no zone)"
    )
    parser.add_argument(
        "--until", metavar="T", help="ignore entries after this time (ISO 8601; UTC if no zone)"
    )
    parser.add_argument(
        "--log-tz",
        metavar="ZONE",
        help="the server's log_timezone (IANA name such as Asia/Shanghai, or +05:30): the zone its "
        "printed times are in; without it abbreviations such as CST are not guessed but reported",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="parse blocks in N processes (default: 1)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _parse_time(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise PlaybookError(
            f"{flag} {value!r} is not an ISO 8601 time such as 2025-03-01T14:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def run(args: argparse.Namespace) -> int:
    since = _parse_time(args.since, "--since")
    until = _parse_time(args.until, "--until")
    if since and until and since > until:
        raise PlaybookError("--since is later than --until")
    if args.jobs < 1:
        raise PlaybookError(f"--jobs {args.jobs} must be at least 1")
    log_tz = zone_named(args.log_tz) if args.log_tz else None
    # pyarrow's default allocator (mimalloc) keeps what each block freed; the system one gives
    # it back, which keeps a long read flat (about 40 MB less at 500 MB, same speed)
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    size = 0
    for path in args.paths:
        with suppress(OSError):  # the reader says what is wrong with it
            size += Path(path).stat().st_size
    evidence = read_server_logs(
        args.paths,
        fmt=args.fmt,
        prefix=args.prefix,
        since=since,
        until=until,
        progress=sys.stderr.isatty() and size >= PROGRESS_FROM_BYTES,
        log_tz=log_tz,
        jobs=args.jobs,
        frames=False,  # the summary is all this command shows: flat memory whatever the size
    )
    if args.json:
        json.dump(evidence.summary, sys.stdout, separators=(",", ":"), default=str)
        sys.stdout.write("\n")
        return 0
    _print_tables(evidence.summary)
    return 0


def _short(stamp: str | None, same_day: bool = False) -> str:
    """'2025-03-01T10:00:05.123+00:00' -> '2025-03-01 10:00:05' (or '10:00:05' within one day)."""
    if not stamp:
        return "-"
    text = stamp.replace("T", " ").split(".")[0].replace("+00:00", "")
    return text.split(" ", 1)[-1] if same_day else text


def _top_names(counts: dict[str, int], n: int = 3) -> str:
    return ", ".join(f"{name} ({count})" for name, count in list(counts.items())[:n]) or "-"


def _print_tables(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    # A pipe or a file has no width of its own: rich would assume 80 columns and squeeze the table.
    console = Console(width=None if sys.stdout.isatty() else 160)
    window = summary["window"]
    first, last = window["first"], window["last"]
    same_day = bool(first and last and first[:10] == last[:10])
    console.print(
        f"[bold]{len(summary['files'])} file(s)[/bold], {summary['format']}"
        + (f" with prefix {summary['prefix']!r}" if summary.get("prefix") else "")
        + f": {summary['lines']:,} lines, {summary['bytes_read'] / 1e6:,.1f} MB, "
        f"{_short(window['first'])} .. {_short(window['last'])} UTC"
    )

    table = Table(title="What ended or refused sessions", title_justify="left")
    # Ids stay whole on a narrow terminal or in a pipe (80 columns); the lists of names wrap.
    table.add_column("category", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("count", justify="right", no_wrap=True)
    table.add_column("first seen", no_wrap=True)
    table.add_column("last seen", no_wrap=True)
    table.add_column("top users", ratio=1)
    table.add_column("top applications", ratio=1)
    events = summary["events"]
    shown = 0
    for category in log_events.CATEGORIES:
        rows = [(eid, e) for eid, e in events.items() if e["category"] == category]
        for i, (event_id, event) in enumerate(rows):
            table.add_row(
                category if i == 0 else "",
                event_id,
                f"{event['count']:,}",
                _short(event["first_seen"], same_day),
                _short(event["last_seen"], same_day),
                _top_names(event["users"]),
                _top_names(event["applications"]),
                end_section=i == len(rows) - 1,
            )
            shown += 1
    if shown:
        console.print(table)
    else:
        console.print("[green]No line in these logs explains a lost session.[/green]")

    info = Table(title="Server and session lines", title_justify="left")
    for column in ("event", "count", "first seen", "last seen"):
        info.add_column(column, justify="right" if column == "count" else "left", no_wrap=True)
    for event_id, event in events.items():
        if event["category"] == "":
            info.add_row(
                event_id,
                f"{event['count']:,}",
                _short(event["first_seen"], same_day),
                _short(event["last_seen"], same_day),
            )
    if info.row_count:
        console.print(info)

    sessions = summary["sessions"]
    if sessions["count"]:
        d = sessions["duration_s"]
        console.print(
            f"[bold]{sessions['count']:,} sessions[/bold] ({sessions['open_or_unknown_end']:,} without a "
            f"disconnection line); duration p50 {d['p50']} s, p90 {d['p90']} s, max {d['max']} s"
        )
        if sessions["ended_by"]:
            console.print("ended right after: " + _top_names(sessions["ended_by"], 8))
    for path, zone in summary.get("zones_assumed", {}).items():
        names = "; ".join(zone["names"].values()) or "no zone printed"
        console.print(f"[dim]times in {path}: {names}[/dim]")
    for warning in summary.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if any(e["category"] for e in events.values()):
        console.print("[dim]What each event means: playbook logs --json | jq .events[].meaning[/dim]")
