"""The one exception type that reaches the user as a single line (main.py prints it, no traceback)."""


class GunnError(Exception):
    """A problem the user can fix: bad input, a missing file, a mismatching checkpoint."""
