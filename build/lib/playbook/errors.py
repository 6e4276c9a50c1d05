"""The one exception the CLI turns into a clear sentence and exit code 3."""


class PlaybookError(Exception):
    """Bad input or an unusable target: the message is one sentence meant for the user."""


# The exit codes of the contract: 0 ok, 1 worst finding a warning, 2 critical, 3 could not diagnose.
EXIT_OK, EXIT_WARNING, EXIT_CRITICAL, EXIT_ERROR = 0, 1, 2, 3
