"""csvlog and jsonlog: one block of whole records into the rows worth keeping.

pyarrow's C++ readers parse a block at a time (CSV with quoted newlines, one JSON object a
line); the kept rows are the session lines and the entries whose level and message the
catalog can explain, classified once per distinct message. A JSON block pyarrow refuses (a
torn or foreign line) is read line by line with the standard library instead.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from playbook.collect import log_events
from playbook.collect.serverlog.rows import AUTH, DISC, EVENT, RECV, Coded, Rows, clean_name, host_of
from playbook.collect.serverlog.stderr import _AUTH_LENIENT, _DISC_LENIENT, _RECV_LENIENT
from playbook.collect.serverlog.times import Clock

# csvlog columns (9.0-12: 23, 13: 24 with backend_type, 14+: 26 with leader_pid and query_id)
_CSV_NAMES = [f"c{i}" for i in range(26)]
_CSV_WANTED = {0: "timestamp", 1: "user", 2: "dbname", 3: "pid", 4: "remote_host", 11: "error_severity",
               12: "state_code", 13: "message", 14: "detail", 22: "application_name"}  # fmt: skip
_JSON_FIELDS = ("timestamp", "user", "dbname", "pid", "remote_host", "application_name", "error_severity",
                "state_code", "message", "detail")  # fmt: skip
_INTERESTING = ("LOG", "WARNING", "ERROR", "FATAL", "PANIC")
_classified: dict[tuple[str, str, str], str | None] = {}


def parse_csv_block(buf: bytes, clock: Clock) -> Rows:
    """Rows of a block of whole csvlog records."""
    if not buf.strip():
        rows = Rows.empty()
        rows.lines, rows.bytes_read = buf.count(b"\n"), len(buf)
        return rows
    table = pacsv.read_csv(
        io.BytesIO(buf),
        read_options=pacsv.ReadOptions(column_names=_CSV_NAMES, use_threads=False, block_size=len(buf) + 1),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=lambda _row: "skip"),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.binary() for name in _CSV_NAMES}, include_missing_columns=True
        ),
    )
    columns = {field: table.column(f"c{i}").combine_chunks() for i, field in _CSV_WANTED.items()}
    # a CSV line with fewer than 23 fields is not a csvlog record
    valid = _arr(pc.is_valid(table.column("c22").combine_chunks()))
    columns["remote_host"] = pc.replace_substring_regex(columns["remote_host"], r":\d*$", "")
    return _rows(columns, valid, clock, lines=buf.count(b"\n"), size=len(buf))


def parse_json_block(buf: bytes, clock: Clock) -> Rows:
    """Rows of a block of whole jsonlog lines."""
    lines = buf.count(b"\n")
    schema = pa.schema(
        [(name, pa.string()) for name in _JSON_FIELDS if name != "pid"] + [("pid", pa.int64())]
    )
    try:
        table = pajson.read_json(
            io.BytesIO(buf),
            read_options=pajson.ReadOptions(use_threads=False, block_size=len(buf) + 1),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
        columns = {name: table.column(name).combine_chunks() for name in _JSON_FIELDS}
        columns["pid"] = pc.cast(columns["pid"], pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError):
        columns = _json_by_line(buf)
    n = len(columns["timestamp"])
    return _rows(columns, np.ones(n, dtype=bool), clock, lines=lines, size=len(buf))


def _json_by_line(buf: bytes) -> dict[str, pa.Array]:
    out: dict[str, list[Any]] = {name: [] for name in _JSON_FIELDS}
    for line in buf.decode("utf-8", "replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        for name in _JSON_FIELDS:
            value = record.get(name)
            out[name].append(None if value is None else str(value))
    return {name: pa.array(values, pa.string()) for name, values in out.items()}


def _arr(values: pa.Array) -> np.ndarray:
    return np.asarray(values.to_numpy(zero_copy_only=False))


def _text(values: pa.Array) -> list[str]:
    if pa.types.is_binary(values.type):
        return [v.decode("utf-8", "replace") if v is not None else "" for v in values.to_pylist()]
    return ["" if v is None else v for v in values.to_pylist()]


def _rows(columns: dict[str, pa.Array], valid: np.ndarray, clock: Clock, lines: int, size: int) -> Rows:
    entries = int(valid.sum())
    level_arr = columns["error_severity"]
    message_arr = columns["message"]
    interesting = _arr(pc.is_in(pc.cast(level_arr, pa.string()), pa.array(_INTERESTING))) & valid
    keep = np.flatnonzero(interesting)
    take = pa.array(keep)
    level = _text(level_arr.take(take))
    message = _text(message_arr.take(take))
    state = _text(columns["state_code"].take(take))
    user = _text(columns["user"].take(take))
    database = _text(columns["dbname"].take(take))
    application = _text(columns["application_name"].take(take))
    host = [host_of(h) for h in _text(columns["remote_host"].take(take))]
    detail = _text(columns["detail"].take(take))
    kinds: list[int] = []
    events: list[str] = []
    seconds: list[float] = []
    kept: list[int] = []
    for i, text in enumerate(message):
        session = log_events.session_kind(text) if level[i] == "LOG" else None
        s = float("nan")
        if session is not None:
            event_id = session.id
            raw = text.encode("utf-8", "replace")
            if event_id == "disconnection":
                kind = DISC
                s = log_events.session_seconds(text) or float("nan")
                match = _DISC_LENIENT.match(raw)
                if match:
                    user[i] = user[i] or clean_name(match.group(4))
                    database[i] = database[i] or clean_name(match.group(5))
                    host[i] = host[i] or host_of(clean_name(match.group(6)))
            elif event_id == "connection_authorized":
                kind = AUTH
                # the record's application_name is not set yet when this line is written
                match = _AUTH_LENIENT.match(raw)
                if match:
                    user[i] = user[i] or clean_name(match.group(1))
                    database[i] = database[i] or clean_name(match.group(2))
                    application[i] = clean_name(match.group(3)) or application[i]
            else:
                kind = RECV
                if not host[i]:
                    match = _RECV_LENIENT.match(raw)
                    host[i] = host_of(clean_name(match.group(1))) if match else ""
        else:
            key = (text.split("\n", 1)[0], level[i], state[i])
            found = _classified.get(key, "?")
            if found == "?":
                if len(_classified) > 50_000:
                    _classified.clear()
                kind_found = log_events.classify(key[0], level[i], state[i] or None)
                found = _classified[key] = kind_found.id if kind_found else None
            if found is None:
                continue
            event_id, kind = found, EVENT
        kept.append(i)
        kinds.append(kind)
        events.append(event_id)
        seconds.append(s)
    index = np.array(kept, dtype=np.int64)
    rows_at = keep[index] if len(index) else np.zeros(0, dtype=np.int64)
    stamps = _text(columns["timestamp"].take(pa.array(rows_at)))
    wall, names = zip(*(t.rpartition(" ")[::2] for t in stamps), strict=True) if stamps else ((), ())
    naive = (
        np.array([w or "NaT" for w in wall], dtype="datetime64[ms]")
        if stamps
        else np.zeros(0, "datetime64[ms]")
    )
    ts = clock.to_utc(naive, Coded.of(list(names)))
    pid_text = _text(columns["pid"].take(pa.array(rows_at)))
    pid = np.array([int(p) if p.isdigit() else 0 for p in pid_text], dtype=np.int64)
    pick = index.tolist()
    rows = Rows(
        kind=np.array(kinds, dtype=np.int8),
        ts=ts,
        pid=pid,
        session_s=np.array(seconds, dtype=np.float64),
        coded={
            "event": Coded.of(events),
            "level": Coded.of([level[i] for i in pick]),
            "sqlstate": Coded.of([state[i] for i in pick]),
            "user": Coded.of([user[i] for i in pick]),
            "database": Coded.of([database[i] for i in pick]),
            "application": Coded.of([application[i] for i in pick]),
            "host": Coded.of([host[i] for i in pick]),
            "message": Coded.texts([message[i] for i in pick]),
            "detail": Coded.texts([detail[i] for i in pick]),
        },
    )
    rows.lines, rows.entries, rows.bytes_read = lines, entries, size
    return rows
