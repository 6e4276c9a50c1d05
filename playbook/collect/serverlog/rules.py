"""The reader's rules: which level words it codes, which session lines it pairs, which LOG
wordings it skips unread, and the lenient shapes of the session lines.

Both engines (serverlog.engine) follow these: the compiled loops (_scan.c) spell the same
constants in C and publish them as `_scan.RULES`, which the engine compares with `RULES` at
import. A rule changed on one side only is an error that names the rule, never other rows.
"""

from __future__ import annotations

import re

from playbook.collect.serverlog.rows import AUTH, DISC, RECV
from playbook.vocabulary.levels import EVENT_LEVELS, SECONDARY_LABELS

# The level words the reader codes (1..5) and the labels of secondary lines (6..11), from the
# vocabulary; _scan.c spells the same list (RULES), compared at import (serverlog.engine).
LEVEL_WORDS = tuple(word.encode() for word in EVENT_LEVELS)
SECONDARY_WORDS = tuple(word.encode() for word in SECONDARY_LABELS)
LEVEL_LOG, LEVEL_DETAIL = 1, 6  # index+1 into LEVEL_WORDS + SECONDARY_WORDS
ALL_LEVEL_WORDS = LEVEL_WORDS + SECONDARY_WORDS
LEVEL_WINDOW = 10  # bytes before ':  ' that hold the level word (STATEMENT is 9)

SESSION_HEADS = {
    b"disconnection: se": DISC,
    b"connection receiv": RECV,
    b"connection author": AUTH,
    b"replication conne": AUTH,
    b"connection authen": -1,  # nothing the sessions need
    b"connection ready:": -1,  # 18's setup_durations line
}
# LOG wordings known to explain nothing: the bulk of a busy log. Anything else at LOG is
# classified (once per distinct text), so a wording this list forgets costs time, never an event.
HARMLESS_LOG = (
    b"duration", b"statemen", b"checkpoi", b"automati", b"temporar", b"execute ", b"parse <u",
    b"bind <un", b"process ", b"restartp", b"listenin", b"logical ", b"starting",
)  # fmt: skip
HARMLESS_EXCEPT = (b"starting PostgreSQL",)  # server_start begins like "starting logical ..."


# What _scan.c's RULES must equal (its own spelling of the constants above).
RULES = {
    "levels": ALL_LEVEL_WORDS,
    "session_heads": SESSION_HEADS,
    "harmless_log": HARMLESS_LOG,
    "harmless_except": tuple(t[:17] for t in HARMLESS_EXCEPT),
}

# The session lines' shapes, read leniently (names with spaces, odd ports): what the fast
# token-by-token reading falls back to.
DISCONNECTION_LINE = re.compile(
    rb"^disconnection: session time: (\d+):(\d+):(\d+(?:\.\d+)?)"
    rb" user=(.*?) database=(.*?) host=(\S*?)(?: port=(\S*))?$"
)
LOGIN_LINE = re.compile(
    rb"^(?:replication )?connection authorized: user=(.*?)(?: database=(.*?))?"
    rb"(?: application_name=(.*?))?(?: SSL enabled \(.*| GSS \(.*)?$"
)
RECEIVED_LINE = re.compile(rb"^connection received: host=(\S*?)(?: port=(\S*))?$")
