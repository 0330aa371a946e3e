"""The one exception type that the entry point prints as a single line."""


class PmmError(Exception):
    """Bad input or configuration. The message names the file or key, what was expected, and the fix."""
