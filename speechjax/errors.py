"""Errors a user can fix (bad config, missing or malformed data), reported without a traceback."""


class UserError(Exception):
    """A mistake the user can fix; main.py prints it without a traceback."""
