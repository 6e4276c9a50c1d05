"""PostgreSQL's level words, as its server log writes them in English.

Source: src/backend/utils/error/elog.c (error_severity() and send_message_to_server_log(),
PostgreSQL 9.6-18). The level word is translated with the server's lc_messages (msgids "LOG",
"FATAL", ...); the labels of the secondary lines are msgids of their own, colon and two spaces
included ("DETAIL:  "). Their translations are in vocabulary/catalogs (tools/build_catalogs.py).
"""

from __future__ import annotations

from typing import Final

# The levels that can carry a session-ending event, in the order the stderr reader codes them.
# LOG covers COMMERROR lines (elog.c prints COMMERROR as LOG).
EVENT_LEVELS: Final = ("LOG", "FATAL", "ERROR", "WARNING", "PANIC")
# The other primary levels a server can log at (log_min_messages below the default).
OTHER_LEVELS: Final = ("DEBUG", "INFO", "NOTICE")
# The labels of the lines an entry continues with, each its own msgid "LABEL:  ".
SECONDARY_LABELS: Final = ("DETAIL", "HINT", "CONTEXT", "STATEMENT", "QUERY", "LOCATION")

# Levels whose entries are read as possible events (PgBouncer's log uses the same words).
INTERESTING_LEVELS: Final = frozenset(EVENT_LEVELS)

# What log_line_prefix's %u and %d print before a session has a user and a database (elog.c,
# translated too).
UNKNOWN_NAME: Final = "[unknown]"
