"""pg-session-playbook: find out why PostgreSQL sessions closed under a connection pool."""

__version__ = "0.1.0"
# The application_name of the playbook's own sessions: left out of every analysis. Kept here, not
# in playbook.evidence, so that `import playbook` (every CLI start) loads nothing else.
APPLICATION_NAME = "pg-session-playbook"
