"""Atomic writes and checksums: how every polylens artifact reaches the disk and comes back.

A file is written to a unique temporary name beside its target and renamed into place, so a
reader (or a killed writer) never sees half a file, and two processes writing the same file at
once never share a temporary. Whatever is read back is checked against a sha256 recorded when it
was written:

- tensors (safetensors): ``save_safetensors`` returns the digest, which the caller records in
  its JSON record or in a sidecar (``write_sidecar``, the ``sha256sum`` format);
- JSON records: ``write_sealed_json`` embeds a ``sha256`` of the record's canonical form, so one
  rename publishes record and checksum together.

Only ``json`` and ``safetensors`` parse files here. This module sits under everything else
(models, extraction, store, probes): it imports nothing from polylens but the error type.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from interp.errors import PolylensError

SEAL = "sha256"
"""The field of a sealed JSON record that holds the sha256 of the rest of it."""

_SIDECAR = re.compile(r"([0-9a-f]{64})  (\S+)\n?")


class CorruptFileError(PolylensError):
    """A file does not match the checksum recorded when it was written (or cannot be parsed)."""

    def __init__(self, path: str | Path, reason: str, remedy: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path} is corrupted ({reason}); {remedy}")


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except OSError as e:
        raise unreadable(path, e) from None
    return h.hexdigest()


def unreadable(path: str | Path, error: OSError) -> PolylensError:
    """One line for a file the OS would not let polylens read (permissions, I/O error)."""
    return PolylensError(
        f"cannot read {path}: {error.strerror or error}; check its permissions and the disk"
    )


class NoSpaceError(PolylensError):
    """The disk filled up while a file was written (nothing half-written was left in place)."""

    def __init__(self, path: str | Path, needed: int) -> None:
        path = Path(path)
        try:
            free = f", {shutil.disk_usage(path.parent).free / 1e6:.1f} MB free"
        except OSError:
            free = ""
        super().__init__(
            f"no space left on device while writing {path}; {needed / 1e6:.1f} MB needed{free}; "
            "free some space or write elsewhere"
        )


def _is_no_space(error: BaseException) -> bool:
    # safetensors reports a full disk as SafetensorError, with the OS message inside its text.
    return getattr(error, "errno", None) == errno.ENOSPC or "No space left" in str(error)


@contextmanager
def _temporary_beside(path: Path, needed: Callable[[], int]) -> Iterator[Path]:
    """A unique temporary path in ``path``'s directory, removed unless renamed into place.

    A full disk becomes ``NoSpaceError`` naming ``path`` and the ``needed()`` bytes.
    """
    # A random name rather than mkstemp: mkstemp's 0600 mode would follow the file into place,
    # where the user's umask should decide (a store shared by a group stays readable).
    tmp = path.with_name(f".{path.name}-{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
    except (OSError, SafetensorError) as e:
        if _is_no_space(e):
            raise NoSpaceError(path, needed()) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _umask_mode(tmp: Path) -> int:
    """Create ``tmp`` empty as ``open`` would (the umask decides its mode); return that mode."""
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return os.stat(tmp).st_mode & 0o777


def atomic_write_bytes(path: str | Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; returns its sha256."""
    path = Path(path)
    with _temporary_beside(path, lambda: len(data)) as tmp:
        tmp.write_bytes(data)
        # No fsync: a file torn by power loss fails its checksum and is rewritten, not trusted.
        os.replace(tmp, path)
    return sha256_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> str:
    """Write UTF-8 ``text`` to ``path`` atomically; returns its sha256."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: object, *, indent: int | None = 2) -> str:
    """Write ``obj`` as JSON (UTF-8, non-ASCII kept) atomically; returns the file's sha256."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False))


def save_safetensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> str:
    """Save ``tensors`` to ``path`` atomically; returns the file's sha256 (to be recorded)."""
    path = Path(path)
    with _temporary_beside(path, lambda: sum(t.nbytes for t in tensors.values())) as tmp:
        mode = _umask_mode(tmp)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.chmod(tmp, mode)  # safetensors writes 0600 whatever the umask says
        digest = sha256_file(tmp)  # hashed before the rename: no reader can change it first
        os.replace(tmp, path)
    return digest


def load_safetensors(path: str | Path, sha256: str, *, remedy: str) -> dict[str, torch.Tensor]:
    """Load a safetensors file after checking it against the ``sha256`` recorded at write time.

    Raises ``CorruptFileError`` (one line: the file, the reason, ``remedy``) on a mismatch or a
    file safetensors cannot parse; never returns tensors from a file that fails its checksum.
    """
    check_file(path, sha256, remedy=remedy)
    try:
        return load_file(str(path))
    except SafetensorError as e:  # matched its checksum yet unreadable: written that way
        raise CorruptFileError(path, f"not a safetensors file: {e}", remedy) from None


def check_file(path: str | Path, sha256: str, *, remedy: str) -> None:
    """Raise ``CorruptFileError`` unless the file at ``path`` exists and has this ``sha256``."""
    if not Path(path).is_file():
        raise CorruptFileError(path, "missing", remedy)
    if sha256_file(path) != sha256:
        raise CorruptFileError(
            path, "sha256 differs from the one recorded when it was written", remedy
        )


# -- sealed JSON records --------------------------------------------------------------------
def _canonical(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def write_sealed_json(path: str | Path, record: dict) -> str:
    """Write ``record`` atomically with a ``sha256`` field over its canonical JSON.

    The checksum lives inside the file (not in a sidecar) so that one rename publishes record
    and checksum together: there is no moment where the two disagree. Returns the seal.
    """
    # Sealed as it will read back: JSON turns int keys and tuples into strings and lists.
    body = json.loads(json.dumps({k: v for k, v in record.items() if k != SEAL}))
    seal = sha256_bytes(_canonical(body))
    atomic_write_json(path, {**body, SEAL: seal})
    return seal


def read_sealed_json(path: str | Path, *, remedy: str) -> dict:
    """Read a record written by ``write_sealed_json``; ``CorruptFileError`` unless it is intact.

    Invalid UTF-8 or JSON, a missing seal (a file polylens did not write, or an older version's),
    or a seal that does not match the content all raise the same one-line error.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise unreadable(path, e) from None
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFileError(path, f"not valid JSON: {e}", remedy) from None
    if not isinstance(record, dict) or not isinstance(record.get(SEAL), str):
        raise CorruptFileError(path, "no recorded sha256: not written by this polylens", remedy)
    body = {k: v for k, v in record.items() if k != SEAL}
    if sha256_bytes(_canonical(body)) != record[SEAL]:
        raise CorruptFileError(path, "content differs from its recorded sha256", remedy)
    return body


# -- sidecars -------------------------------------------------------------------------------
def sidecar_path(path: str | Path) -> Path:
    """Where the checksum of ``path`` is recorded: ``<path>.sha256``."""
    path = Path(path)
    return path.with_name(f"{path.name}.sha256")


def write_sidecar(path: str | Path, sha256: str) -> None:
    """Record ``sha256`` as the checksum of ``path`` (``sha256sum -c`` reads it too)."""
    atomic_write_text(sidecar_path(path), f"{sha256}  {Path(path).name}\n")


def read_sidecar(path: str | Path) -> str | None:
    """The checksum recorded for ``path``, or None when none (or an unreadable one) is."""
    try:
        text = sidecar_path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    match = _SIDECAR.fullmatch(text)
    return match[1] if match and match[2] == Path(path).name else None


def matches_sidecar(path: str | Path) -> str | None:
    """The sha256 of ``path`` if it matches the one recorded beside it, else None."""
    recorded = read_sidecar(path)
    if recorded is None or not Path(path).is_file():
        return None
    return recorded if sha256_file(path) == recorded else None
