"""The one exception the CLI turns into a clear sentence and exit code 3."""


class PlaybookError(Exception):
    """Bad input or an unusable target: the message is one sentence meant for the user."""


class TargetRefused(PlaybookError):
    """The server would not let the playbook in for a reason that is part of the incident: no free
    slot (53300), starting or shutting down (57P03), nothing listening, or the path timing out.

    `sqlstate` is the one the server's words imply (libpq gives none for login failures), `cause`
    one of "slots", "role_limit", "server_down", "network". With logs to read, `playbook run`
    diagnoses from them instead of giving up: the refusal is evidence too.
    """

    def __init__(self, message: str, *, sqlstate: str | None, cause: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.cause = cause


# The exit codes of the contract: 0 ok, 1 worst finding a warning, 2 critical, 3 could not diagnose.
EXIT_OK, EXIT_WARNING, EXIT_CRITICAL, EXIT_ERROR = 0, 1, 2, 3
