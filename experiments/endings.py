"""How a command ends when it does not end well: SIGTERM as Ctrl-C, a full disk as one line.

The CLI runs every command inside ``sigterm_raises`` so that a SIGTERM (a scheduler's stop, a
``kill``) unwinds the command like Ctrl-C does and its cleanup runs (a partial result directory
is removed); ``no_space`` finds a full disk behind whatever error a library raised for it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
from collections.abc import Iterator


class Terminated(BaseException):
    """SIGTERM, raised where the command is, so that its cleanup runs as for Ctrl-C.

    Not an ``Exception``: no "one experiment failed, go on" handler swallows it.
    """


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises ``Terminated``; the previous handler comes back after.

    A second SIGTERM while the first one's cleanup runs is ignored. Only the main thread can
    install handlers; elsewhere, and where the handler in place was not set from Python (it
    could not be put back), nothing changes.
    """
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    fired = False

    def terminate(signum, frame):
        nonlocal fired
        if not fired:
            fired = True
            raise Terminated

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        try:
            fired = True  # the command is over: nothing left to clean up
        finally:
            signal.signal(signal.SIGTERM, previous)


def file_named(error: OSError) -> str | None:
    """The file an OS error names, as text (None when it names none)."""
    name = error.filename
    return os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) and name else None


def no_space(error: BaseException) -> str | None:
    """The one-line message when ``error`` (or what caused it) is a full disk, else None."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            named = file_named(cause)
            where = f" while writing {named}" if named else ""
            return f"no space left on device{where}; free some space or write elsewhere"
        cause = cause.__cause__ or cause.__context__
    if "No space left on device" in str(error):  # e.g. a library's error that wraps errno 28
        return "no space left on device; free some space or write elsewhere"
    return None
