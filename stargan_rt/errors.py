"""Errors a user can fix. The CLI prints them as one line and exits with status 2."""


class UserError(Exception):
    """Bad input: the message says what was wrong, what was expected and how to fix it."""

    exit_code = 2
