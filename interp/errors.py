"""The one exception that reaches users: one line saying what is wrong and what to do."""


class PolylensError(Exception):
    """A user-facing error; the CLI prints its message alone and exits with code 2."""
