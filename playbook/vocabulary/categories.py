"""The words every part of the playbook shares: categories, severities, notebooks, id prefixes, stacks.

One definition each, so a collector, a diagnosis, a plot and the report cannot disagree on them.
These are the playbook's own words (no upstream source): README.md's findings table and the
notebooks in playbook/notebooks are their readers' contract. `playbook.evidence.vocab` re-exports
them for older importers.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from playbook import APPLICATION_NAME

Category = Literal["leak", "timeout", "network", "pool_config", "server"]
CATEGORIES: Final[tuple[Category, ...]] = get_args(Category)

SeverityName = Literal["info", "warning", "critical"]
SEVERITIES: Final[tuple[SeverityName, ...]] = get_args(SeverityName)

NotebookName = Literal["triage", "leaks", "timeouts", "network", "pool_config"]
# Run order and file of each notebook; the files ship inside the package (playbook/notebooks).
NOTEBOOK_FILES: Final[dict[NotebookName, str]] = {
    "triage": "00_triage.ipynb",
    "leaks": "01_leaks.ipynb",
    "timeouts": "02_timeouts.ipynb",
    "network": "03_network.ipynb",
    "pool_config": "04_pool_config.ipynb",
}
# Where a reader learns about each category; server causes are explained in triage.
NOTEBOOK_OF_CATEGORY: Final[dict[Category, NotebookName]] = {
    "leak": "leaks",
    "timeout": "timeouts",
    "network": "network",
    "pool_config": "pool_config",
    "server": "triage",
}
# Stable finding-id prefix per category, so alerts can route on ids.
ID_PREFIX: Final[dict[Category, str]] = {
    "leak": "LEAK",
    "timeout": "TMO",
    "network": "NET",
    "pool_config": "POOL",
    "server": "SRV",
}
# Findings about the pooler between application and server (PgBouncer) carry their own prefix,
# whatever category the close reason belongs to: alerts route on the layer as well as the cause.
POOLER_ID_PREFIX: Final = "BNC"
ID_PREFIXES: Final[tuple[str, ...]] = (*ID_PREFIX.values(), POOLER_ID_PREFIX)

Stack = Literal[
    "psycopg", "psycopg2", "sqlalchemy", "asyncpg", "node-postgres", "prisma", "hikaricp", "pgbouncer"
]
# The client stacks the application-log reader recognises and the fixes are written for.
STACKS: Final[tuple[Stack, ...]] = get_args(Stack)
UNKNOWN_STACK: Final = "unknown"

# The application_name of the playbook's own sessions: left out of every analysis.
OWN_APPLICATION_NAME: Final = APPLICATION_NAME
