"""The exceptions main.py reports without a traceback: errors a user can fix (bad config,
missing or malformed data) and a training run stopped by a signal after saving.

A module with no imports, so that main.py can name them without importing JAX or TensorFlow.
"""


class UserError(Exception):
    """A mistake the user can fix; main.py prints it without a traceback."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived (on any process); a checkpoint was saved."""
