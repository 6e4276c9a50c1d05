"""csvlog and jsonlog: one block of whole records into the rows worth keeping.

The compiled splitter (_records.c) reads a block in one pass: csvlog records of any PostgreSQL
version (23 fields in 9.0-12, 24 in 13, 26 from 14), jsonlog one object a line, and copies out
only the fields used of the records that can matter (a level worth reading, not a LOG wording
known to be harmless). The reference engine (serverlog.engine) does the same with Python's csv
module and pyarrow's JSON reader, slower (tests compare the two). The kept rows are the session
lines (found with starts_with, split on spaces: serverlog.messages) and the entries whose level
and message the catalog can explain, classified once per distinct first line, level and
SQLSTATE. Times of the usual shape are read at fixed places (serverlog.stamps), names are
decoded once per distinct value. A JSON block pyarrow refuses (a torn or
foreign line) is read line by line with the standard library instead.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from playbook.collect import log_events
from playbook.collect.serverlog import engine
from playbook.collect.serverlog.arrow_buffers import as_numpy, binary_array, binary_scalar, index_array
from playbook.collect.serverlog.messages import Messages, pids_of
from playbook.collect.serverlog.rows import AUTH, DISC, EVENT, RECV, Coded, Rows, clean_name, host_of
from playbook.collect.serverlog.rules import HARMLESS_EXCEPT, HARMLESS_LOG, LOGIN_LINE
from playbook.collect.serverlog.stamps import FixedHead, read_fixed_heads
from playbook.collect.serverlog.times import Clock
from playbook.vocabulary.levels import EVENT_LEVELS
from playbook.vocabulary.translations import ENGLISH

_STAMP = FixedHead(millis=True, between=b"")  # csvlog and jsonlog print %m's form

# The fields read, in the order _records.c expects (error_severity 6th, message 8th), with their
# csvlog positions (the same in every version: 13 and 14 appended fields after the 23 of 9.0-12).
_FIELDS = ("timestamp", "user", "dbname", "pid", "remote_host", "error_severity", "state_code", "message",
           "detail", "application_name")  # fmt: skip
_CSV_AT = (0, 1, 2, 3, 4, 11, 12, 13, 14, 22)
_JSON_KEYS = tuple(name.encode() for name in _FIELDS)
_CSV_PORT_AT = _FIELDS.index("remote_host")  # csvlog's connection_from is host:port
_CSV_MIN_FIELDS = 23
_CSV_FIELD_LIMIT = 1 << 30  # a field as long as a block may be
_PORT = re.compile(rb":\d*\Z")
_INTERESTING = EVENT_LEVELS
_INTERESTING_BYTES = tuple(level.encode() for level in _INTERESTING)
_classified: dict[tuple[str, str, str, str], str | None] = {}


def parse_csv_block(buf: bytes, clock: Clock, language: str = ENGLISH) -> Rows:
    """Rows of a block of whole csvlog records (messages in `language`)."""
    if not buf or buf.isspace():  # what `not buf.strip()` says, without copying the block
        rows = Rows.empty()
        rows.lines, rows.bytes_read = _newlines(buf), len(buf)
        return rows
    if engine.ENGINE.records is not None:
        return _compiled_rows(buf, clock, jsonlog=False, language=language)
    columns, entries = _csv_by_record(buf)
    return _rows(columns, clock, lines=_newlines(buf), size=len(buf), entries=entries, language=language)


def parse_json_block(buf: bytes, clock: Clock, language: str = ENGLISH) -> Rows:
    """Rows of a block of whole jsonlog lines (messages in `language`)."""
    if engine.ENGINE.records is not None:
        return _compiled_rows(buf, clock, jsonlog=True, language=language)
    lines = _newlines(buf)
    schema = pa.schema([(name, pa.string()) for name in _FIELDS if name != "pid"] + [("pid", pa.int64())])
    try:
        table = pajson.read_json(
            io.BytesIO(buf),
            read_options=pajson.ReadOptions(use_threads=False, block_size=len(buf) + 1),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
        columns = {name: table.column(name).combine_chunks() for name in _FIELDS}
        columns["pid"] = pc.cast(columns["pid"], pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError):
        columns = _json_by_line(buf)
    return _rows(
        columns, clock, lines=lines, size=len(buf), entries=len(columns["timestamp"]), language=language
    )


def _compiled_rows(buf: bytes, clock: Clock, jsonlog: bool, language: str) -> Rows:
    """parse_csv_block and parse_json_block through _records.c: only the records that can
    matter come back, their fields as binary arrays over the buffers C filled."""
    records = engine.ENGINE.records
    assert records is not None
    wanted: tuple[int, ...] | tuple[bytes, ...] = _JSON_KEYS if jsonlog else _CSV_AT
    port_at = -1 if jsonlog else _CSV_PORT_AT
    lines, entries, pairs = records.records(
        buf, jsonlog, wanted, _INTERESTING_BYTES, HARMLESS_LOG, HARMLESS_EXCEPT, port_at
    )
    columns = {
        name: pa.Array.from_buffers(
            pa.binary(), len(offsets) // 4 - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
        )
        for name, (offsets, data) in zip(_FIELDS, pairs, strict=True)
    }
    return _rows(columns, clock, lines=lines, size=len(buf), entries=entries, language=language)


def _csv_by_record(buf: bytes) -> tuple[dict[str, pa.Array], int]:
    """The fields used of every csvlog record (23 fields or more) of `buf`, with Python's csv
    module (the reference _records.c is tested against), and how many records there were."""
    out: dict[str, list[bytes]] = {name: [] for name in _FIELDS}
    entries = 0
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)  # 128 KB by default: a long query would end the read
    for record in csv.reader(io.StringIO(buf.decode("utf-8", "surrogateescape"), newline="")):
        if len(record) < _CSV_MIN_FIELDS:
            continue
        entries += 1
        for name, at in zip(_FIELDS, _CSV_AT, strict=True):
            out[name].append(record[at].encode("utf-8", "surrogateescape"))
        out["remote_host"][-1] = _PORT.sub(b"", out["remote_host"][-1])  # connection_from: host:port
    return {name: pa.array(values, pa.binary()) for name, values in out.items()}, entries


def _newlines(buf: bytes) -> int:
    """buf.count(b"\n"), with memchr where the compiled loops are (several times faster)."""
    compiled = engine.ENGINE.scan
    return compiled.count_lines(buf) if compiled is not None else buf.count(b"\n")


def _json_by_line(buf: bytes) -> dict[str, pa.Array]:
    """The fields of every line of `buf` that is one JSON object, with the standard library (for
    a block pyarrow refuses). Lines are split at newlines alone (splitlines would also cut at
    U+2028, which JSON strings may hold), and a lone surrogate escape reads as U+FFFD."""
    out: dict[str, list[Any]] = {name: [] for name in _FIELDS}
    for raw in buf.split(b"\n"):
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        for name in _FIELDS:
            value = record.get(name)
            text = None if value is None else str(value)
            out[name].append(
                text.encode("utf-16", "surrogatepass").decode("utf-16", "replace") if text else text
            )
    return {name: pa.array(values, pa.string()) for name, values in out.items()}


def _binary(values: pa.Array) -> pa.Array:
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return values if pa.types.is_binary(values.type) else values.cast(pa.binary())


def _decoded(
    values: pa.Array, clean: bool = False, host: bool = False
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(codes, distinct texts, which distinct raw values were empty) of a binary column: the
    texts decoded with replacement once per distinct value (cleaned as names, through host_of
    for hosts)."""
    codes, texts = _distinct_texts(values.fill_null(binary_scalar(b"")), host)
    empty = np.array([not t for t in texts], dtype=bool)
    if clean:
        texts = [clean_name(t) for t in texts]
    return codes, texts or [""], empty if len(empty) else np.ones(1, bool)


def _distinct_texts(values: pa.Array, host: bool = False) -> tuple[np.ndarray, list[str]]:
    """(int32 codes, distinct values decoded with replacement) of a binary column without
    nulls: hashed and decoded in C straight from the column's buffers when the compiled loops
    are there, else pyarrow's dictionary_encode and a decode per distinct value. With `host`
    the texts go through host_of."""
    compiled = engine.ENGINE.scan
    if compiled is not None and len(values):
        _, offsets_buffer, data = values.buffers()
        offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[
            values.offset : values.offset + len(values) + 1
        ]
        bounds = offsets.astype(np.int64)
        how = 4 if host else 3  # host_of in C, else the text alone
        codes, texts = compiled.encode(data if data is not None else b"", bounds[:-1], bounds[1:], how)
        return np.frombuffer(codes, dtype=np.int32), texts
    encoded = pc.dictionary_encode(values)
    texts = [v.decode("utf-8", "replace") for v in encoded.dictionary.to_pylist()]
    return as_numpy(encoded.indices).astype(np.int32), [host_of(t) for t in texts] if host else texts


def _messages(texts: pa.Array) -> Messages:
    """The stderr reader's view of messages (compiled, or over one binary column), here over the
    buffer of a binary column."""
    texts = texts.fill_null(binary_scalar(b"")) if texts.null_count else texts
    _, offsets_buffer, data = texts.buffers()
    if data is None or not len(texts):
        return Messages(b"", np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    bounds = np.frombuffer(offsets_buffer, dtype=np.int32)[texts.offset : texts.offset + len(texts) + 1]
    bounds = bounds.astype(np.int64)
    return Messages(data.to_pybytes(), bounds[:-1], bounds[1:])


def _at(values: pa.Array, rows: np.ndarray) -> pa.Array:
    """values[rows] for sorted, distinct `rows`: the array itself, uncopied, when they are all of
    its rows (the usual case once _records.c has left out what is never kept)."""
    return values if len(rows) == len(values) else values.take(index_array(rows))


def _either(first: Coded, empty: np.ndarray, rows: np.ndarray, second: Coded) -> Coded:
    """`first`, except on `rows` where its raw value was empty: `second` (codes per row of `rows`)."""
    codes = first.codes.copy()
    use = rows[empty[first.codes[rows]]]
    at = np.searchsorted(rows, use)
    codes[use] = second.codes[at] + len(first.values)
    return Coded(codes, first.values + second.values)


def _rows(
    columns: dict[str, pa.Array], clock: Clock, lines: int, size: int, entries: int, language: str = ENGLISH
) -> Rows:
    """The kept rows: session lines (LOG) and entries the catalog explains, classified once per
    distinct (first line, level, SQLSTATE); LOG wordings known to be harmless (the stderr
    reader's list) are not classified."""
    columns = {name: _binary(col) for name, col in columns.items()}
    level_all = columns["error_severity"]
    interesting = as_numpy(pc.is_in(level_all, binary_array(list(_INTERESTING_BYTES))))
    cand = np.flatnonzero(interesting)
    level = _at(level_all, cand)
    message = _at(columns["message"], cand)
    line_kind, harmless = _line_kinds(level, message)
    session = line_kind > 0
    maybe = np.flatnonzero(~session & ~harmless)
    # classify once per distinct (first line, level, SQLSTATE)
    event_of = np.zeros(len(cand), dtype=np.int32)  # code into event_names; 0: none
    event_names = [""]
    if len(maybe):
        event_of[maybe], event_names = _classify_records(
            _at(message, maybe), _at(level, maybe), _at(columns["state_code"], cand[maybe]), language
        )
    kept = np.flatnonzero(session | (event_of > 0))
    rows_at = cand[kept]
    k = len(kept)
    kinds = np.where(session[kept], line_kind[kept], EVENT).astype(np.int8)
    ev_codes = event_of[kept].copy()
    names = event_names + list(SESSION_EVENTS)
    for kind_code, event_id in (
        (DISC, "disconnection"),
        (RECV, "connection_received"),
        (AUTH, "connection_authorized"),
    ):
        ev_codes[kinds == kind_code] = names.index(event_id)
    texts = _at(message, kept)

    def coded(name: str, clean: bool = True, host: bool = False) -> tuple[Coded, np.ndarray]:
        values = _at(columns[name], rows_at)
        codes, values_, empty = _decoded(values, clean, host)
        return Coded(codes, values_), empty

    # Names and session times from the session lines' messages, where the record's own field is
    # empty (csvlog and jsonlog leave user and database out of some): stderr's readers of them.
    own = {"user": coded("user"), "database": coded("dbname"), "application": coded("application_name")}
    own["host"] = coded("remote_host", host=True)
    session_s = np.full(k, np.nan)
    user, database, application, host = _names_from_session_lines(texts, kinds, own, session_s)
    stamps = _at(columns["timestamp"], rows_at)
    ts = clock.to_utc(*_wall_and_zone(stamps))
    pid = pids_of(_at(columns["pid"], rows_at), k)
    level_c, level_v, _ = _decoded(_at(level, kept))
    state_c, state_v, _ = _decoded(_at(columns["state_code"], rows_at), clean=True)
    msg_c, msg_v, _ = _decoded(texts)
    det_c, det_v, _ = _decoded(_at(columns["detail"], rows_at))
    rows = Rows(
        kind=kinds,
        ts=ts,
        pid=pid,
        session_s=session_s,
        coded={
            "event": Coded(ev_codes, names),
            "level": Coded(level_c, [clean_name(v) for v in level_v]),
            "sqlstate": Coded(state_c, state_v),
            "user": user,
            "database": database,
            "application": application,
            "host": host,
            "message": Coded(msg_c, msg_v),
            "detail": Coded(det_c, det_v),
        },
    )
    rows.lines, rows.entries, rows.bytes_read = lines, entries, size
    return rows


def _line_kinds(level: pa.Array, message: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(per record: DISC, RECV or AUTH for the session lines, else 0; which are LOG wordings
    known to be harmless)."""
    is_log = as_numpy(pc.equal(level, binary_scalar(b"LOG")))

    def starts(text: bytes) -> np.ndarray:
        return as_numpy(pc.starts_with(message, text))

    disc = is_log & starts(b"disconnection: session time: ")
    recv = is_log & ~disc & starts(b"connection received: ")
    auth = is_log & ~disc & ~recv
    auth &= starts(b"connection authorized: ") | starts(b"replication connection authorized: ")
    kind = np.zeros(len(is_log), dtype=np.int8)
    kind[disc], kind[recv], kind[auth] = DISC, RECV, AUTH
    harmless = is_log & as_numpy(pc.is_in(pc.binary_slice(message, 0, 8), binary_array(list(HARMLESS_LOG))))
    for text in HARMLESS_EXCEPT:
        harmless &= ~starts(text)
    return kind, harmless


def _classify_records(
    message: pa.Array, level: pa.Array, state_code: pa.Array, language: str
) -> tuple[np.ndarray, list[str]]:
    """(per record: a code into the event names, 0 for none; the event names, "" first) of
    records that may be events, classified once per distinct (first line, level, SQLSTATE)."""
    first_line = pc.list_element(pc.split_pattern(message, "\n", max_splits=1), index_array(np.zeros(1))[0])
    f_codes, f_texts, _ = _decoded(first_line)
    l_codes, l_texts, _ = _decoded(level)
    s_codes, s_texts, _ = _decoded(state_code)
    key = (f_codes.astype(np.int64) * len(l_texts) + l_codes) * len(s_texts) + s_codes
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    found = []
    for f in first.tolist():
        k3 = (f_texts[f_codes[f]], l_texts[l_codes[f]], s_texts[s_codes[f]], language)
        hit = _classified.get(k3, "?")
        if hit == "?":
            if len(_classified) > 50_000:
                _classified.clear()
            kind_found = log_events.classify(k3[0], k3[1], k3[2] or None, language)
            hit = _classified[k3] = kind_found.id if kind_found else None
        found.append(hit)
    names_index = {n: i + 1 for i, n in enumerate(sorted({h for h in found if h}))}
    per_unique = np.array([names_index.get(h, 0) if h else 0 for h in found], dtype=np.int32)
    return per_unique[inverse], ["", *names_index]


def _names_from_session_lines(
    texts: pa.Array, kinds: np.ndarray, own: dict[str, tuple[Coded, np.ndarray]], session_s: np.ndarray
) -> tuple[Coded, Coded, Coded, Coded]:
    """(user, database, application, host): the records' own (`own`: each with which of its
    distinct values were empty), filled from the session lines' messages where empty; the
    session time of disconnections goes into `session_s`."""
    (user, user_empty), (database, db_empty) = own["user"], own["database"]
    (application, _), (host, host_empty) = own["application"], own["host"]
    lines_read = _messages(texts)
    d_rows = np.flatnonzero(kinds == DISC)
    if len(d_rows):
        (h, m, sec), (d_user, d_db, d_host) = lines_read.disconnected(d_rows)
        session_s[d_rows] = np.round(h * 3600 + m * 60 + sec, 3)  # the log has milliseconds
        user = _either(user, user_empty, d_rows, d_user)
        database = _either(database, db_empty, d_rows, d_db)
        host = _either(host, host_empty, d_rows, d_host)
    r_rows = np.flatnonzero(kinds == RECV)
    if len(r_rows):
        host = _either(host, host_empty, r_rows, lines_read.received(r_rows))
    a_rows = np.flatnonzero(kinds == AUTH)
    if len(a_rows):
        # the record's application_name is not set yet when this line is written
        a_codes, a_texts, _ = _decoded(texts.take(index_array(a_rows)))
        parsed = []
        for t in a_texts:
            match = LOGIN_LINE.match(t.encode())
            parsed.append(tuple(clean_name(g) for g in match.groups()) if match else ("", "", ""))
        user = _either(user, user_empty, a_rows, Coded(a_codes, [p[0] for p in parsed]))
        database = _either(database, db_empty, a_rows, Coded(a_codes, [p[1] for p in parsed]))
        app_empty_msg = np.array([not p[2] for p in parsed], dtype=bool)
        has_app = a_rows[~app_empty_msg[a_codes]]
        codes = application.codes.copy()
        codes[has_app] = a_codes[~app_empty_msg[a_codes]] + len(application.values)
        application = Coded(codes, application.values + [p[2] for p in parsed])
    return user, database, application, host


SESSION_EVENTS = ("disconnection", "connection_received", "connection_authorized")


def _wall_and_zone(stamps: pa.Array) -> tuple[np.ndarray, Coded]:
    """'2025-03-01 10:00:00.123 CET' -> (naive datetime64[ms], zone name): split at the last
    space (no space: no time, the whole text as the name). The usual shape (milliseconds, a
    zone name of 1 to 8 bytes) is read with numpy; the rest once per distinct text."""
    stamps = stamps.fill_null(binary_scalar(b""))
    data = stamps.buffers()[2]
    if data is not None and len(stamps):
        arr = np.frombuffer(data, dtype=np.uint8)
        offsets = np.frombuffer(stamps.buffers()[1], dtype=np.int32)[
            stamps.offset : stamps.offset + len(stamps) + 1
        ]
        starts, ends = offsets[:-1].astype(np.int64), offsets[1:].astype(np.int64)
        ok, ms, zone_codes, zone_names, _ = read_fixed_heads(arr, starts, ends, _STAMP, zone_ends=ends)
        # a zone name with a NUL byte or a space would not be one name: the slow way then
        ok &= np.array([b"\0" not in n and b" " not in n for n in zone_names], dtype=bool)[zone_codes]
        if ok.all():
            names = [n.decode("utf-8", "replace") for n in zone_names]
            index: dict[str, int] = {}  # Coded.of for these few names, without pandas
            first_codes = np.array([index.setdefault(n, len(index)) for n in names], dtype=np.int32)
            zone = Coded(first_codes, [clean_name(n) for n in index] or [""])
            return ms.astype("datetime64[ms]"), Coded(zone.codes[zone_codes], zone.values)
    codes, texts, _ = _decoded(stamps)
    walls, zones = zip(*(t.rpartition(" ")[::2] for t in texts), strict=True)
    wall = np.array([w or "NaT" for w in walls], dtype="datetime64[ms]")
    zone = Coded.of(list(zones))
    return wall[codes], Coded(zone.codes[codes], zone.values)
