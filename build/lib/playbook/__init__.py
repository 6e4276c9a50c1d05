"""pg-session-playbook: find out why PostgreSQL sessions closed under a connection pool."""

__version__ = "0.1.0"
APPLICATION_NAME = "pg-session-playbook"
