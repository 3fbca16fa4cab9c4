"""The errors a command reports as one message and exit code 2 (no traceback): bad params or
bad data, found before any work."""


class StudyError(Exception):
    """A problem the user fixes in params.yaml or in the data; its message says how."""
