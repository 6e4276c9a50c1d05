"""pg-session-playbook: find out why PostgreSQL sessions closed under a connection pool."""

__version__ = "0.1.0"
from playbook.evidence.vocab import OWN_APPLICATION_NAME as APPLICATION_NAME

__all__ = ["APPLICATION_NAME", "__version__"]
