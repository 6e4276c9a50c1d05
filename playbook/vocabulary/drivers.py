"""What the client stacks write when a session fails: the words the application-log reader knows.

Every entry names where its words come from: the project, the file and the version the text was
checked against. `WORDINGS` maps a wording to an application-log kind; `PRISMA_CODES` maps
Prisma's error codes (the Rust engine's of 5.x/6.x and Prisma 7's driver-adapter runtime) to the
same kinds; `STACK_MARKS` are the marks that name a stack; the class names of the Python drivers'
hierarchies come from tools/gen_driver_classes.py (driver_classes.py), the ones of drivers not
installed here are cited below. The reader (playbook.collect.applog) compiles these; the
diagnosis reads the kind ids.

Patterns are Python regular expressions, matched case-insensitively against one line of a record
(ANSI colours removed); a record takes the best-ranked kind any of its lines names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from playbook.vocabulary import driver_classes

# Versions the texts below were read in (a wording cited without its own version is from these).
PG: Final = "PostgreSQL 17"
PGBOUNCER: Final = "PgBouncer 1.23"
PRISMA_RUST: Final = "prisma-engines 6.x (Prisma 5.x/6.x)"  # libs/user-facing-errors/src/*.rs
PRISMA_7: Final = "prisma 7.9.1"  # packages/*/src in the prisma/prisma repository at tag 7.9.1


@dataclass(frozen=True)
class Wording:
    """One wording: the kind it names, its pattern, the only stack that writes it, and its source."""

    kind: str
    pattern: str
    stack: str | None  # a wording only this stack produces is stack evidence too
    source: str


def _w(kind: str, pattern: str, stack: str | None, source: str) -> Wording:
    return Wording(kind, pattern, stack, source)


# Most specific first: a record's event takes the best-ranked kind matching any of its lines (a
# kind's rank is where it first appears). Causes (a server-side FATAL, a refused connect) rank
# above the symptoms they produce (a pool wait that timed out, a connection found closed).
# Wordings PgBouncer relays to clients name no stack: the client's own stack logged them.
WORDINGS: Final[tuple[Wording, ...]] = (
    # -- server-side FATAL/ERROR texts, whichever driver relays them ---------------------------
    _w(
        "idle_session_timeout",
        r"terminating connection due to idle-session timeout|IdleSessionTimeout",
        None,
        f"{PG} src/backend/tcop/postgres.c ProcessInterrupts (57P05); psycopg/errors.py IdleSessionTimeout",
    ),
    _w(
        "idle_in_transaction_timeout",
        r"terminating connection due to idle-in-transaction timeout|IdleInTransactionSessionTimeout",
        None,
        f"{PG} src/backend/tcop/postgres.c (25P03); psycopg/errors.py IdleInTransactionSessionTimeout",
    ),
    _w(
        "transaction_timeout",
        r"terminating connection due to transaction timeout|\bTransactionTimeout",
        None,
        f"{PG} src/backend/tcop/postgres.c (25P04); psycopg/errors.py TransactionTimeout",
    ),
    _w(
        "admin_shutdown",
        r"terminating connection due to administrator command|\bAdminShutdown",
        None,
        f"{PG} src/backend/tcop/postgres.c (57P01); psycopg/errors.py, asyncpg/exceptions AdminShutdown",
    ),
    _w(
        "crash_shutdown",
        r"terminating connection because of crash of another server process|CrashShutdown",
        None,
        f"{PG} src/backend/tcop/postgres.c quickdie (57P02); psycopg/errors.py CrashShutdown",
    ),
    _w(
        "cannot_connect_now",
        r"the database system is (?:shutting down|starting up|in recovery mode|not yet accepting)"
        r"|CannotConnectNow",
        None,
        f"{PG} src/backend/postmaster/postmaster.c, utils/init/postinit.c (57P03); psycopg/errors.py",
    ),
    _w(
        "statement_timeout",
        r"canceling statement due to statement timeout",
        None,
        f"{PG} src/backend/tcop/postgres.c (57014)",
    ),
    _w("lock_timeout", r"canceling statement due to lock timeout", None, f"{PG} src/backend/tcop/postgres.c"),
    _w(
        "too_many_clients",
        r"sorry, too many clients already|remaining connection slots are reserved"
        r"|too many connections for (?:role|database)|TooManyConnectionsError",
        None,
        f"{PG} src/backend/storage/lmgr/proc.c, utils/init/postinit.c (53300); asyncpg/exceptions",
    ),
    _w(
        "too_many_clients",
        r"Too many database connections opened",
        "prisma",
        f"{PRISMA_7} packages/client-engine-runtime/src/user-facing-error.ts (TooManyConnections, P2037)",
    ),
    _w(
        "too_many_clients",
        r"DriverAdapterError: TooManyConnections|kind: '?TooManyConnections",
        "prisma",
        f"{PRISMA_7} packages/driver-adapter-utils/src/types.ts MappedError; adapter-pg errors.ts (53300)",
    ),
    _w(
        "auth_failed",
        r"password authentication failed for user|no pg_hba\.conf entry for|InvalidPasswordError",
        None,
        f"{PG} src/backend/libpq/auth.c (28P01, 28000); asyncpg/exceptions InvalidPasswordError",
    ),
    _w(
        "auth_failed",
        r"Authentication failed against (?:the )?database server",
        "prisma",
        f"{PRISMA_RUST} common.rs P1000; {PRISMA_7} client-engine-runtime/src/user-facing-error.ts",
    ),
    _w(
        "auth_failed",
        r"User `?[^`\s]*`? was denied access on the database"
        r"|DriverAdapterError: (?:AuthenticationFailed|DatabaseAccessDenied)"
        r"|kind: '?(?:AuthenticationFailed|DatabaseAccessDenied)",
        "prisma",
        f"{PRISMA_RUST} common.rs P1010; {PRISMA_7} user-facing-error.ts, driver-adapter-utils types.ts",
    ),
    # -- PgBouncer: its own log, or its pooler errors relayed to the application -----------------
    _w("pgbouncer_server_crashed", r"server conn crashed\?", "pgbouncer", f"{PGBOUNCER} src/server.c"),
    _w("pgbouncer_query_wait_timeout", r"\bquery_wait_timeout\b", None, f"{PGBOUNCER} src/janitor.c"),
    _w("pgbouncer_query_timeout", r"\bquery_timeout\b", None, f"{PGBOUNCER} src/janitor.c"),
    _w(
        "pgbouncer_query_timeout",
        r"closing because: query timeout",
        "pgbouncer",
        f"{PGBOUNCER} src/janitor.c",
    ),
    _w("pgbouncer_client_idle_timeout", r"\bclient_idle_timeout\b", None, f"{PGBOUNCER} src/janitor.c"),
    _w(
        "pgbouncer_idle_transaction_timeout",
        r"closing because: idle transaction timeout",
        "pgbouncer",
        f"{PGBOUNCER} src/janitor.c",
    ),
    # relayed to the client as 08P01 with the reason as its message (psycopg: ProtocolViolation);
    # PostgreSQL's own wording is "idle-in-transaction", hyphenated
    _w(
        "pgbouncer_idle_transaction_timeout",
        r"\bidle transaction timeout\b",
        None,
        f"{PGBOUNCER} src/janitor.c (disconnect_client reason)",
    ),
    _w(
        "pgbouncer_query_timeout",
        r"(?:ProtocolViolation\w*|OperationalError|error):\s+query timeout\b",
        None,
        f"{PGBOUNCER} src/janitor.c, relayed as 08P01 (psycopg/errors.py ProtocolViolation)",
    ),
    _w("pgbouncer_client_login_timeout", r"\bclient_login_timeout\b", None, f"{PGBOUNCER} src/janitor.c"),
    _w(
        "pgbouncer_max_client_conn",
        r"no more connections allowed \(max_client_conn\)",
        None,
        f"{PGBOUNCER} src/client.c",
    ),
    _w("pgbouncer_server_login_failed", r"server login failed", None, f"{PGBOUNCER} src/server.c"),
    _w("pgbouncer_cannot_connect", r"pgbouncer cannot connect to server", None, f"{PGBOUNCER} src/objects.c"),
    _w(
        "pgbouncer_client_unexpected_eof",
        r"closing because: client unexpected eof",
        "pgbouncer",
        f"{PGBOUNCER} src/client.c",
    ),
    # a session-level prepared statement met a pooled server that does not have it (transaction
    # pooling: PgBouncer before 1.21 or with max_prepared_statements = 0, other poolers alike)
    _w(
        "prepared_statement_error",
        r"prepared statement \"?[^\"\s]*\"? (?:does not exist|already exists)"
        r"|\bInvalidSqlStatementName\b|\bDuplicatePreparedStatement\b|\bInvalidSQLStatementNameError\b",
        None,
        f"{PG} src/backend/commands/prepare.c (26000, 42P05); psycopg/errors.py; asyncpg/exceptions",
    ),
    # -- connecting ----------------------------------------------------------------------------
    _w(
        "connect_refused",
        r"failed: Connection refused|ConnectionRefusedError|Connect call failed",
        None,
        f"{PG} src/interfaces/libpq/fe-connect.c; Python asyncio/selector_events.py",
    ),
    _w("connect_refused", r"\bECONNREFUSED\b", None, "Node.js 20 net (errno name), node-postgres 8.23"),
    _w(
        "connect_refused",
        r"Connection to \S+ refused\. Check that the hostname",
        "hikaricp",
        "pgJDBC 42.7.13 org/postgresql/core/v3/ConnectionFactoryImpl.java",
    ),
    _w(
        "connect_timeout",
        r"(?<!cancellation )(?<!connection )\btimeout expired\b",
        None,
        f"{PG} src/interfaces/libpq/fe-connect.c (connect_timeout); node-postgres 8.23 pg/lib/client.js",
    ),
    _w(
        "connect_timeout",
        r"connection timeout expired|\bpsycopg\.errors\.ConnectionTimeout\b",
        "psycopg",
        "psycopg 3.3 psycopg/connection.py, connection_async.py",
    ),
    _w(
        "connect_timeout",
        r"Connection terminated due to connection timeout",
        "node-postgres",
        "node-postgres 8.23 pg-pool 3.14 index.js (connectionTimeoutMillis of a new client)",
    ),
    _w("connect_timeout", r"was reached but timed out", "prisma", f"{PRISMA_RUST} common.rs P1002"),
    _w(
        "connect_timeout",
        r"Connection attempt timed out",
        "hikaricp",
        "pgJDBC 42.7.13 org/postgresql/Driver.java (loginTimeout)",
    ),
    # -- pools -----------------------------------------------------------------------------------
    _w(
        "leak_detected",
        r"Connection leak detection triggered",
        "hikaricp",
        "HikariCP 5.1.0 com/zaxxer/hikari/pool/ProxyLeakTask.java",
    ),
    _w(
        "validation_failed",
        r"Failed to validate connection",
        "hikaricp",
        "HikariCP 5.1.0 com/zaxxer/hikari/pool/PoolBase.java",
    ),
    _w("validation_failed", r"connection failed check", "psycopg", "psycopg_pool 3.3 psycopg_pool/pool.py"),
    _w(
        "validation_failed",
        r"Pool pre-ping on connection .* failed",
        "sqlalchemy",
        "SQLAlchemy 2.0 lib/sqlalchemy/pool/base.py",
    ),
    # what pool_pre_ping logs (logger sqlalchemy.pool, INFO) when the ping raised a disconnect
    _w(
        "validation_failed",
        r"Disconnection detected on checkout",
        "sqlalchemy",
        "SQLAlchemy 2.0 lib/sqlalchemy/pool/base.py",
    ),
    _w(
        "pool_timeout",
        r"couldn't get a connection after|\bPoolTimeout\b",
        "psycopg",
        "psycopg_pool 3.3 psycopg_pool/pool.py",
    ),
    _w(
        "pool_timeout",
        r"QueuePool limit of size \d+ overflow -?\d+ reached",
        "sqlalchemy",
        "SQLAlchemy 2.0 lib/sqlalchemy/pool/impl.py",
    ),
    _w(
        "pool_timeout",
        r"timeout exceeded when trying to connect",
        "node-postgres",
        "node-postgres 8.23 pg-pool 3.14 index.js",
    ),
    _w(
        "pool_timeout",
        r"Timed out fetching a new connection from the connection pool",
        "prisma",
        f"{PRISMA_RUST} query_engine/mod.rs P2024 PoolTimeout",
    ),
    # an interactive transaction that got no connection within maxWait: a pool wait too
    _w(
        "pool_timeout",
        r"Unable to start a transaction in the given time",
        "prisma",
        f"{PRISMA_RUST} query-engine/core/src/interactive_transactions/error.rs AcquisitionTimeout; "
        f"{PRISMA_7} client-engine-runtime/src/transaction-manager/transaction-manager-error.ts (P2028)",
    ),
    _w(
        "pool_timeout",
        r"Connection is not available, request timed out after",
        "hikaricp",
        "HikariCP 5.1.0 com/zaxxer/hikari/pool/HikariPool.java createTimeoutException",
    ),
    _w(
        "pool_queue_full",
        r"requests waiting|\bTooManyRequests\b",
        "psycopg",
        "psycopg_pool 3.3 psycopg_pool/pool.py, errors.py",
    ),
    # -- the network path ------------------------------------------------------------------------
    _w(
        "ssl_eof",
        r"SSL SYSCALL error: (?:EOF detected|Success)|SSL connection has been closed unexpectedly"
        r"|SSL error: unexpected eof",
        None,
        f"{PG} src/interfaces/libpq/fe-secure-openssl.c",
    ),
    _w(
        "connection_reset",
        r"Connection reset\b|\bECONNRESET\b",
        None,
        "glibc 2.36 strerror(ECONNRESET); Node.js 20 errno names (libuv)",
    ),
    _w(
        "broken_pipe",
        r"Broken pipe|\bEPIPE\b",
        None,
        "glibc 2.36 strerror(EPIPE); Node.js 20 errno names (libuv)",
    ),
    _w(
        "network_timeout",
        r"(?:receive|send) data (?:from|to) server: Connection timed out|\bETIMEDOUT\b"
        r"|SocketTimeoutException|Read timed out|SSL SYSCALL error: (?:Operation|Connection) timed out",
        None,
        f"{PG} src/interfaces/libpq/fe-secure.c; Node errno; java.net.SocketTimeoutException",
    ),
    # Prisma 7's SocketTimeout (P1008) is node-postgres' ETIMEDOUT: a TCP timeout, not a query's
    _w(
        "network_timeout",
        r"\bOperation has timed out\b|DriverAdapterError: SocketTimeout|kind: '?SocketTimeout",
        "prisma",
        f"{PRISMA_7} client-engine-runtime/src/user-facing-error.ts; adapter-pg/src/errors.ts (ETIMEDOUT)",
    ),
    # -- the session is gone; who closed it is not said ----------------------------------------
    _w(
        "server_closed_unexpectedly",
        r"server closed the connection unexpectedly",
        None,
        f"{PG} src/interfaces/libpq/fe-misc.c",
    ),
    _w(
        "server_closed_unexpectedly",
        r"Connection terminated unexpectedly",
        "node-postgres",
        "node-postgres 8.23 pg/lib/client.js",
    ),
    _w(
        "server_closed_unexpectedly",
        r"Server has closed the connection",
        "prisma",
        f"{PRISMA_RUST} common.rs P1017; {PRISMA_7} user-facing-error.ts",
    ),
    # Prisma 7's ConnectionClosed is node-postgres' ECONNRESET (adapter-pg errors.ts)
    _w(
        "server_closed_unexpectedly",
        r"DriverAdapterError: ConnectionClosed|kind: '?ConnectionClosed",
        "prisma",
        f"{PRISMA_7} packages/driver-adapter-utils/src/types.ts MappedError, adapter-pg/src/errors.ts",
    ),
    # the Rust engine's own log of a pooled connection the server or the path closed (its
    # `prisma:error` line): tokio-postgres' Error printed with {:?}; Kind::Closed says no more
    _w(
        "server_closed_unexpectedly",
        r"Error in PostgreSQL connection: Error \{ kind: Closed\b",
        "prisma",
        f"{PRISMA_RUST} quaint/src/connector/postgres/native/mod.rs (tracing::error!); "
        "tokio-postgres 0.7 src/error/mod.rs Kind::Closed",
    ),
    _w(
        "server_closed_unexpectedly",
        r"connection was closed in the middle of operation",
        "asyncpg",
        "asyncpg 0.32 asyncpg/protocol/protocol.pyx",
    ),
    _w("connection_lost", r"no connection to the server", None, f"{PG} src/interfaces/libpq/fe-exec.c"),
    _w(
        "connection_lost",
        r"\bthe connection is lost\b",
        "psycopg",
        "psycopg 3.3 psycopg/waiting.py, pq/pq_ctypes.py",
    ),
    _w(
        "connection_lost",
        r"An I/O error occurred while sending to the backend",
        "hikaricp",
        "pgJDBC 42.7.13 org/postgresql/core/v3/QueryExecutorImpl.java",
    ),
    _w(
        "connection_lost",
        r"Database connection failed when \w+ (?:\w+ )?copy",
        "hikaricp",
        "pgJDBC 42.7.13 org/postgresql/core/v3/QueryExecutorImpl.java",
    ),
    _w(
        "connection_lost",
        r"Can't reconnect until invalid (?:savepoint )?transaction is rolled back",
        "sqlalchemy",
        "SQLAlchemy 2.0 lib/sqlalchemy/engine/base.py",
    ),
    _w(
        "connect_failed",
        r"Can't reach database server",
        "prisma",
        f"{PRISMA_RUST} common.rs P1001; {PRISMA_7} user-facing-error.ts (DatabaseNotReachable)",
    ),
    _w(
        "connect_failed",
        r"DriverAdapterError: (?:DatabaseNotReachable|TlsConnectionError)"
        r"|kind: '?(?:DatabaseNotReachable|TlsConnectionError)|Error opening a TLS connection",
        "prisma",
        f"{PRISMA_RUST} common.rs P1011; {PRISMA_7} driver-adapter-utils/src/types.ts, user-facing-error.ts",
    ),
    _w(
        "connect_failed",
        r"The connection attempt failed",
        "hikaricp",
        "pgJDBC 42.7.13 org/postgresql/core/v3/ConnectionFactoryImpl.java",
    ),
    _w(
        "connect_failed",
        r"Failed to initialize pool: ",
        "hikaricp",
        "HikariCP 5.1.0 com/zaxxer/hikari/pool/HikariPool.java (PoolInitializationException)",
    ),
    _w(
        "connect_failed",
        r"error connecting in '|reconnection attempt in pool .* failed",
        "psycopg",
        "psycopg_pool 3.3 psycopg_pool/pool.py",
    ),
    # a login to a database that is not there: below connect_failed, so HikariCP's "Failed to
    # initialize pool: FATAL: database ... does not exist" stays the pool's failure to connect
    _w(
        "unknown_database",
        r"database \"[^\"]*\" does not exist|\bInvalidCatalogName",
        None,
        f"{PG} src/backend/utils/init/postinit.c (3D000); psycopg/errors.py, asyncpg InvalidCatalogName",
    ),
    _w(
        "unknown_database",
        r"Database `[^`]*` does not exist on the database server|DriverAdapterError: DatabaseDoesNotExist"
        r"|kind: '?DatabaseDoesNotExist",
        "prisma",
        f"{PRISMA_RUST} common.rs P1003; {PRISMA_7} user-facing-error.ts, driver-adapter-utils types.ts",
    ),
    _w(
        "connection_closed",
        r"\bthe connection is closed\b|\bconnection is closed\b",
        None,
        "psycopg 3.3 psycopg/_connection_base.py",
    ),
    _w(
        "connection_closed", r"connection already closed", "psycopg2", "psycopg2 2.9 psycopg/connection_int.c"
    ),
    _w(
        "connection_closed",
        r"cannot perform operation: connection is closed",
        "asyncpg",
        "asyncpg 0.32 asyncpg/protocol/protocol.pyx",
    ),
    _w(
        "connection_closed",
        r"is not queryable",
        "node-postgres",
        "node-postgres 8.23 pg/lib/client.js",
    ),
    # pgJDBC: a closed PgConnection, and a closed PGPooledConnection (case kept: not "SSL connection")
    _w(
        "connection_closed",
        r"This connection has been closed|(?-i:\bConnection has been closed[. ])",
        "hikaricp",
        "pgJDBC 42.7.13 org/postgresql/jdbc/PgConnection.java, ds/PGPooledConnection.java",
    ),
    _w(
        "pool_discarded_broken",
        r"discarding (?:closed|broken) connection",
        "psycopg",
        "psycopg_pool 3.3 psycopg_pool/pool.py",
    ),
    _w(
        "pool_discarded_broken",
        r"marked as broken because of",
        "hikaricp",
        "HikariCP 5.1.0 com/zaxxer/hikari/pool/ProxyConnection.java",
    ),
    # a hard invalidation with its reason; "Soft Invalidate" is pool_recycle's normal work
    _w(
        "pool_discarded_broken",
        r"(?<!Soft )\bInvalidate connection .* \(reason: ",
        "sqlalchemy",
        "SQLAlchemy 2.0 lib/sqlalchemy/pool/base.py",
    ),
    _w(
        "returned_in_transaction",
        r"rolling back returned connection",
        "psycopg",
        "psycopg_pool 3.3 psycopg_pool/pool.py",
    ),
    _w(
        "client_query_timeout",
        r"Query read timeout",
        "node-postgres",
        "node-postgres 8.23 pg/lib/client.js",
    ),
    _w("client_query_timeout", r"Operations timed out after", "prisma", f"{PRISMA_RUST} common.rs P1008"),
)


@dataclass(frozen=True)
class PrismaCode:
    """One of Prisma's error codes: the kind it names (None: none of ours), its wording, source."""

    code: str
    kind: str | None
    wording: str
    source: str


# The codes Prisma attaches to the errors it throws (`code: 'P1017'`, `"error_code":"P1017"`): a
# record that carries only the code (a JSON logger that kept code and not message) is still
# read. Where one code covers several failures (P2028: every interactive-transaction error), the
# code names no kind and only the wording above decides.
PRISMA_CODES: Final[tuple[PrismaCode, ...]] = (
    PrismaCode(
        "P1000",
        "auth_failed",
        "Authentication failed against database server at `{database_host}`, ...",
        f"{PRISMA_RUST} common.rs IncorrectDatabaseCredentials; {PRISMA_7} user-facing-error.ts",
    ),
    PrismaCode(
        "P1001",
        "connect_failed",
        "Can't reach database server at `{database_host}`:`{database_port}`",
        f"{PRISMA_RUST} common.rs DatabaseNotReachable; {PRISMA_7} user-facing-error.ts",
    ),
    PrismaCode(
        "P1002",
        "connect_timeout",
        "The database server at `{database_host}`:`{database_port}` was reached but timed out.",
        f"{PRISMA_RUST} common.rs DatabaseTimeout (no Prisma 7 adapter kind maps to it)",
    ),
    PrismaCode(
        "P1003",
        "unknown_database",
        "Database `{database_name}` does not exist on the database server at ...",
        f"{PRISMA_RUST} common.rs DatabaseDoesNotExist; {PRISMA_7} user-facing-error.ts",
    ),
    # 5.x/6.x: socket_timeout of the URL expired on a query; 7: adapter-pg's ETIMEDOUT. The
    # wordings tell them apart; the bare code is read as the query's.
    PrismaCode(
        "P1008",
        "client_query_timeout",
        "Operations timed out after `{time}` (5.x/6.x); Operation has timed out (7)",
        f"{PRISMA_RUST} common.rs DatabaseOperationTimeout; {PRISMA_7} user-facing-error.ts SocketTimeout",
    ),
    PrismaCode(
        "P1010",
        "auth_failed",
        "User `{database_user}` was denied access on the database `{database_name}`",
        f"{PRISMA_RUST} common.rs DatabaseAccessDenied; {PRISMA_7} user-facing-error.ts",
    ),
    PrismaCode(
        "P1011",
        "connect_failed",
        "Error opening a TLS connection: {message}",
        f"{PRISMA_RUST} common.rs TlsConnectionError; {PRISMA_7} user-facing-error.ts",
    ),
    PrismaCode(
        "P1017",
        "server_closed_unexpectedly",
        "Server has closed the connection.",
        f"{PRISMA_RUST} common.rs ConnectionClosed; {PRISMA_7} user-facing-error.ts ConnectionClosed",
    ),
    PrismaCode(
        "P2024",
        "pool_timeout",
        "Timed out fetching a new connection from the connection pool. More info: "
        "http://pris.ly/d/connection-pool (Current connection pool timeout: {timeout}, "
        "connection limit: {connection_limit})",
        f"{PRISMA_RUST} query_engine/mod.rs PoolTimeout (Prisma 7 has no engine pool: the pg.Pool waits)",
    ),
    PrismaCode(
        "P2028",
        None,
        "Transaction API error: {error} (a pool wait only as 'Unable to start a transaction in the "
        "given time.')",
        f"{PRISMA_RUST} query_engine/mod.rs InteractiveTransactionError; "
        f"{PRISMA_7} transaction-manager-error.ts",
    ),
    PrismaCode(
        "P2037",
        "too_many_clients",
        "Too many database connections opened: {cause}",
        f"{PRISMA_7} client-engine-runtime/src/user-facing-error.ts TooManyConnections",
    ),
)
# Where the code stands in a record: `code: 'P1017'` (Node's inspect), "code":"P1017" (JSON),
# "error_code":"P1017" (the Rust engine's own JSON), code=P1017.
# PrismaClientInitializationError names it errorCode (client-runtime-utils errors).
PRISMA_CODE_FIELD: Final = r"(?:\b|_|error)code\W{1,4}(P[12]\d{3})\b"
# SQLSTATEs the drivers carry beside the server's message, which say what happened in any
# lc_messages: node-postgres' DatabaseError `code: '57P01'` (and loggers' "code":"57P01"), Prisma
# 7's unmapped database errors ("Raw query failed. Code: `57P01`. Message: ...", P2010/P2039),
# pgJDBC/HikariCP's SQLSTATE(57P01) and SQLState: 57P01. Codes from PostgreSQL's
# src/backend/utils/errcodes.txt (each comment is its condition name); only the codes whose
# meaning is one kind of ours.
SQLSTATE_KINDS: Final[dict[str, str]] = {
    "57P01": "admin_shutdown",  # admin_shutdown
    "57P02": "crash_shutdown",  # crash_shutdown
    "57P03": "cannot_connect_now",  # cannot_connect_now
    "57P05": "idle_session_timeout",  # idle_session_timeout (PostgreSQL 14+)
    "25P03": "idle_in_transaction_timeout",  # idle_in_transaction_session_timeout
    "25P04": "transaction_timeout",  # transaction_timeout (PostgreSQL 17+)
    "53300": "too_many_clients",  # too_many_connections
    "28P01": "auth_failed",  # invalid_password
    "3D000": "unknown_database",  # invalid_catalog_name
}
SQLSTATE_FIELD: Final = r"(?:(?:\b|_|error)code\W{1,4}|\bSQLSTATE\W{0,3})(<SQLSTATE>)\b"
SQLSTATE_SOURCE: Final = f"{PG} src/backend/utils/errcodes.txt"

# The pool figures P2024 prints: the pool's timeout (s) and its connection limit.
PRISMA_POOL_FIGURES: Final = r"connection pool timeout: (\d+), connection limit: (\d+)"
# The line Prisma puts above its message ("... invocation:", or "... invocation in" followed by
# the caller's file:line and a few numbered lines of its source, the current one marked →).
# (packages/client/src/runtime/utils/createErrorMessageWithContext.ts, 5.x to 7.x alike)
PRISMA_INVOCATION: Final = "Invalid `prisma."
# The call is quoted as written: `prisma.user.findMany()`, `this.prisma.user.findMany()`, `tx.user...`
PRISMA_INVOCATION_LINE: Final = r"Invalid `[\w$.]*\.\w+\(\)` invocation(?::| in)\s*$"
PRISMA_CONTEXT_LINE: Final = r"^\s*(?:→\s*)?\d+(?:\s|$)|^\S+:\d+:\d+\s*$|^\s*$"

# One lower-case word of every wording above, so a plain-literal search on the lower-cased line
# decides cheaply which lines deserve the full patterns (test_applog checks each kind's wordings
# pass it).
TRIGGER_WORDS: Final[tuple[str, ...]] = (
    "connect", "timeout", "timed out", "closed", "terminat", "refused", "ssl", "reset", "pipe",
    "too many", "authentication", "pg_hba", "crash", "econn", "etimedout", "database system",
    "canceling", "requests waiting", "login", "max_client_conn", "queryable", "validate",
    "discarding", "rolling back", "i/o error", "can't reach", "shutdown", "pooltimeout",
    "toomanyrequests", "invalidpassword", "timeout expired", "leak detection", "unexpected eof",
    "initialize pool", "prepared statement", "invalidsqlstatementname", "duplicatepreparedstatement",
    "does not exist", "doesnotexist", "invalidcatalogname", "denied access", "accessdenied",
    "start a transaction",
)  # fmt: skip
# ... and the one pattern no word covers: a Prisma code beside its field (`code: 'p1017'`), not
# every line that says "code" (HTTP status codes are in most access logs).
TRIGGER_PATTERNS: Final[tuple[str, ...]] = (
    r"code\W{1,4}p[12]\d{3}",
    r"(?:code\W{1,4}|sqlstate\W{0,3})(?:57p0[1235]|25p0[34]|53300|28p01|3d000)",
)

# When a record carries several stacks' marks, the layer the application configures wins:
# SQLAlchemy wraps psycopg/psycopg2/asyncpg, Prisma's driver adapter wraps node-postgres.
STACK_PRECEDENCE: Final[tuple[str, ...]] = (
    "pgbouncer",
    "sqlalchemy",
    "prisma",
    "hikaricp",
    "psycopg",
    "psycopg2",
    "asyncpg",
    "node-postgres",
)

# PgBouncer's own log line: "2024-05-01 12:00:00.000 UTC [123] LOG ..." (src/util.c log format).
PGBOUNCER_LINE: Final = (
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ \[\d+\] (?:LOG|WARNING|ERROR|FATAL|DEBUG|NOISE) "
)
# Cheap literal prefilter for STACK_MARKS (lower-cased line); PgBouncer's line is anchored.
STACK_TRIGGERS: Final = (
    r"pgbouncer|-0x|sqlalche|psycopg|asyncpg|node_modules|prisma|hikari|org\.postgresql|code"
)


@dataclass(frozen=True)
class StackMark:
    """A mark in a line that names the client stack behind it, and where the mark comes from."""

    stack: str
    pattern: str
    source: str


STACK_MARKS: Final[tuple[StackMark, ...]] = (
    StackMark("pgbouncer", PGBOUNCER_LINE, f"{PGBOUNCER} src/util.c log line"),
    StackMark(
        "pgbouncer",
        r"\bpgbouncer\[\d+\]: |\b[CS]-0x[0-9a-f]+: \S+/\S+@",
        f"{PGBOUNCER} syslog ident, src/objects.c connection prefix",
    ),
    StackMark(
        "sqlalchemy",
        r"\bsqlalchemy\.(?:exc|pool|engine|orm|dialects)\b|sqlalche\.me/e/|/sqlalchemy/",
        "SQLAlchemy 2.0 module paths and lib/sqlalchemy/exc.py error links",
    ),
    StackMark(
        "psycopg",
        r"\bpsycopg(?:_pool)?\.\w|\bpsycopg_pool\b|/site-packages/psycopg(?:_pool)?/",
        "psycopg 3.3 module paths",
    ),
    StackMark("psycopg2", r"\bpsycopg2\b", "psycopg2 2.9 module path"),
    StackMark("asyncpg", r"\basyncpg\.\w|/site-packages/asyncpg/", "asyncpg 0.32 module paths"),
    StackMark(
        "node-postgres", r"node_modules[/\\]pg(?:-pool|-protocol)?[/\\]", "node-postgres 8.23 package paths"
    ),
    StackMark(
        "prisma",
        r"\bPrismaClient\w*Error\b|\bprisma:(?:error|warn|info|query)\b|@prisma/|node_modules/\.prisma/"
        r"|\bDriverAdapterError\b|" + PRISMA_CODE_FIELD,
        f"{PRISMA_7} packages/internals/src/logger.ts tags, client-runtime-utils errors, "
        "driver-adapter-utils/src/error.ts; package paths",
    ),
    # pgJDBC without HikariCP is counted here too: HikariCP is the JDBC pool the fixes address
    StackMark(
        "hikaricp",
        r"\bHikariPool-\d+\b|com\.zaxxer\.hikari|\borg\.postgresql\.(?:util|core|jdbc)\.",
        "HikariCP 5.1.0 pool names and packages; pgJDBC 42.7.13 packages",
    ),
)

# -- record shapes: the lines that continue a failure's record --------------------------------
# Python's traceback (Lib/traceback.py: the chain's two separators) and Java's
# (java.lang.Throwable.printStackTrace: "Caused by:", "Suppressed:" indented, "... n more").
TRACEBACK_MARKS: Final[tuple[str, ...]] = (
    "Traceback (most recent call last)",
    "The above exception was the direct cause",
    "During handling of the above exception",
    "Caused by:",
)
# Lines that always belong to the record above them: SQLAlchemy's statement and link
# (lib/sqlalchemy/exc.py StatementError.__str__), Prisma's invocation line, the server's
# HINT/DETAIL relayed by libpq (fe-protocol3.c pqBuildErrorMessage3).
ALWAYS_CONTINUES: Final[tuple[str, ...]] = (
    *TRACEBACK_MARKS,
    "[SQL:",
    "[parameters:",
    "(Background on this error",
    PRISMA_INVOCATION,
    "HINT:",
    "DETAIL:",
)
# libpq puts a second message on its own line ("...administrator command\nserver closed ...")
# (src/interfaces/libpq/fe-misc.c, fe-secure.c, fe-secure-openssl.c).
LIBPQ_SECOND_LINES: Final[tuple[str, ...]] = (
    "server closed the connection unexpectedly",
    "SSL connection has been closed unexpectedly",
    "SSL SYSCALL error",
    "could not receive data from server",
    "could not send data to server",
    "no connection to the server",
    "This probably means",
)
# node-postgres' DatabaseError is named after the protocol message: its stack starts "error: "
# (packages/pg-protocol/src/parser.ts).
NODE_DATABASE_ERROR: Final = "error: "
# Node prints an error as its stack: "Name: message", the message's own lines (Prisma's run over
# several, blank ones included), then the "    at " frames (V8's Error.prototype.stack format).
NODE_ERROR_HEAD: Final = r"(?:^|\s)(?:[A-Z][\w$]*)?(?:Error|Exception)(?: \[[^\]]*\])?: "

# -- exception classes ----------------------------------------------------------------------
# The line that names an exception continues its record. Most classes end in Error/Exception/
# Warning; these do not. Generated from the installed hierarchies (driver_classes.py), plus the
# hierarchies of drivers not installed here, cited by file. pgJDBC (PSQLException, PSQLWarning),
# HikariCP, node-postgres (Error, DatabaseError) and Prisma (PrismaClient*Error,
# DriverAdapterError) need none.
SQLALCHEMY_SOURCE: Final = "SQLAlchemy 2.0 lib/sqlalchemy/exc.py, lib/sqlalchemy/orm/exc.py"
SQLALCHEMY_CLASSES: Final[tuple[str, ...]] = (
    "AwaitRequired",  # exc.py (asyncio: a sync call that needed await)
    "MissingGreenlet",  # exc.py
    "MultipleResultsFound",  # exc.py
    "NoDBAPILoaded",  # exc.py
    "NoInspectionAvailable",  # exc.py
    "NoResultFound",  # exc.py
)
PSYCOPG2_SOURCE: Final = "psycopg2 2.9 psycopg/sqlstate_errors.h, lib/errors.py"
# psycopg2's SQLSTATE classes carry the same names as psycopg 3's (both generated from
# PostgreSQL's errcodes.txt); its XX000 class is InternalError_ like psycopg 3's.
PSYCOPG2_CLASSES: Final[tuple[str, ...]] = driver_classes.PSYCOPG
DRIVER_CLASS_NAMES: Final[frozenset[str]] = frozenset(
    (
        *driver_classes.PSYCOPG,
        *driver_classes.PSYCOPG_POOL,
        *driver_classes.ASYNCPG,
        *PSYCOPG2_CLASSES,
        *SQLALCHEMY_CLASSES,
    )
)

KIND_IDS: Final[tuple[str, ...]] = tuple(dict.fromkeys(w.kind for w in WORDINGS))
