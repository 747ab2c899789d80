"""The one exception type that reaches users: a one-line message saying what is wrong and what to do."""


class PolylensError(Exception):
    """A user-facing error; the CLI prints its message alone and exits with code 2."""
