"""Checks of user input made before any work starts: devices, output paths, text files.

Each check raises ``PolylensError`` with one line saying what is wrong and what to do, so a
mistake is reported before a model loads or a computation runs, not after.
"""

from __future__ import annotations

import codecs
import errno
import tempfile
from pathlib import Path

import torch

from interp.errors import PolylensError

_DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_device(spec: str | torch.device | None) -> str | None:
    """Validate a device string (``cpu``, ``cuda``, ``cuda:N``, ``mps``) against this machine.

    ``None`` (pick ``cuda`` when available, else ``cpu``) passes through. Returns the spec.
    """
    if spec is None or isinstance(spec, torch.device):
        return spec
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in _DEVICE_TYPES:
        raise PolylensError(f"unknown device {spec!r}; use cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PolylensError(f"device {spec!r} asked for, but no CUDA GPU is available; use cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise PolylensError(
                f"device {spec!r} does not exist: this machine has {count} GPU(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise PolylensError(f"device {spec!r} asked for, but MPS is not available; use cpu")
    return spec


def nearest_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing parent."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable_dir(directory: Path, what: str) -> None:
    if not directory.is_dir():
        raise PolylensError(f"{what}: {directory} is a file, not a directory; choose another path")
    try:
        # A real write, not os.access: it also sees read-only mounts and ACLs.
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise PolylensError(
                f"{what}: no space left on the device of {directory}; free some or choose another "
                "path"
            ) from None
        raise PolylensError(
            f"{what}: cannot write in {directory} (read-only or no permission); choose another path"
        ) from None


def check_output_dir(path: str | Path, what: str = "--out") -> Path:
    """A directory that can be created or written to: not a file, its nearest parent writable."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise PolylensError(f"{what} {path} is an existing file; give a directory")
    _check_writable_dir(nearest_existing(path), f"{what} {path}")
    return path


def check_output_file(path: str | Path, what: str = "--out") -> Path:
    """A file that can be written: not a directory, its nearest existing parent writable."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise PolylensError(f"{what} {path} is a directory; give a file name")
    if path.exists():
        try:
            with open(path, "r+b"):
                pass
        except OSError:
            raise PolylensError(
                f"{what} {path} exists and cannot be written; choose another path"
            ) from None
    else:
        _check_writable_dir(nearest_existing(path.parent), f"{what} {path}")
    return path


def read_file_bytes(path: str | Path, what: str) -> bytes:
    """The bytes of a user's file, or one line naming it: missing, or unreadable (``OSError``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PolylensError(f"{what} {path} does not exist or is not a file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise PolylensError(f"cannot read {what} {path}: {e.strerror or e}") from None


def read_text_file(path: str | Path, what: str) -> str:
    """The UTF-8 text of a user's file, or one line naming the file and what is wrong.

    A leading UTF-8 byte-order mark (as Windows editors write) is dropped, as ``utf-8-sig``
    does; offsets in the error count the file's bytes, the mark included.

    Args:
        path: the user's file.
        what: what the file is, for the error (``"prompt file"``, ``"config file"``).

    Raises:
        PolylensError: the file is missing, cannot be read (``OSError``) or is not UTF-8.
    """
    path = Path(path).expanduser()
    data = read_file_bytes(path, what)
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolylensError(
            f"{what} {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
            f"{e.start + skip}); save it as UTF-8"
        ) from None


def split_lines(text: str) -> list[str]:
    r"""The lines of a user's text file, split on ``\n`` only, a trailing ``\r`` dropped.

    Unlike ``str.splitlines``, characters such as ``\v``, ``\f``, ``\x1c`` or U+2028 stay
    inside their line, so line i of the list is line i + 1 of the file (CRLF files included).
    A final newline ends the last line; it opens no new one.
    """
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]
