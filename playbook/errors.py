"""The one exception the CLI turns into a clear sentence and exit code 3."""


class PlaybookError(Exception):
    """Bad input or an unusable target: the message is one sentence meant for the user."""
