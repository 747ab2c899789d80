"""The on-disk activation store: content-addressed entries of safetensors shards + a manifest.

An entry's key hashes everything that determines its contents (model fingerprint, prompts,
layers, positions, storage dtype), so asking twice reads back instead of recomputing. Layout::

    <root>/<key>/prompts.json                    the prompts, in order
    <root>/<key>/shard-00000.safetensors         prompts [0, shard_size) ...; each atomic, its
                                                 header naming its entry and row range
    <root>/<key>/shard-00000.safetensors.sha256  its checksum, written after it (sha256sum format)
    <root>/<key>/manifest.json                   provenance, shapes, sha256 of every file above;
                                                 sealed with a sha256 of its own; written last

An entry is complete only once its manifest exists. Nothing is read back unchecked: a complete
entry against its manifest, a resumed one shard by shard against the sidecars (a shard without
one is recomputed). A checksum proves a shard's bytes, not whose they are, so every shard also
records in its own header (covered by the checksum) the entry it belongs to and the prompt rows
it holds: a resume reuses a shard only if both are the ones it would write now (not a shard
copied from another entry, nor one cut with another shard size), and an entry's shards must
cover each of its prompts exactly once. Only keys of the form ``entry_key`` makes are accepted,
and only paths inside the root are touched. Reads are memory-mapped (``safe_open``) and can land
on any device.

The store holds tensors and manifests and knows nothing of models or extraction: the shard loop
and its resume live in ``interp.extract``, which calls ``is_complete``, ``begin_entry``,
``shard_ranges``, ``has_verified_shard``, ``write_shard``, ``finish_entry`` and ``load``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from jaxtyping import Float, Int
from safetensors import SafetensorError, safe_open
from torch import Tensor

from interp.errors import PolylensError
from interp.storage.activations import Activations
from interp.storage.files import (
    CorruptFileError,
    atomic_write_json,
    matches_sidecar,
    read_sealed_json,
    read_sidecar,
    save_safetensors,
    sha256_file,
    write_sealed_json,
    write_sidecar,
)
from interp.storage.paths import cache_dir

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PROMPTS = "prompts.json"
KEY_PATTERN = re.compile(r"[0-9a-f]{20}")
"""What ``entry_key`` returns; nothing else is ever taken for an entry."""
_SHARD_PATTERN = re.compile(r"shard-\d{5}\.safetensors")
_KEY_FIELDS = ("model", "prompts_hash", "layers", "positions", "dtype")
_MANIFEST_FIELDS = (
    "key",
    "model",
    "n_prompts",
    "layers",
    "positions",
    "dtype",
    "shards",
    "prompts_sha256",
)


def entry_key(meta: dict) -> str:
    """Content address of an extraction: a hash of the fields that determine its tensors."""
    identity = {k: meta[k] for k in _KEY_FIELDS}
    if "sites" in meta:  # named-site extractions; residual-layer keys stay as they were
        identity["sites"] = meta["sites"]
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


class ActivationStore:
    """A directory of cached extractions (default: ``<polylens cache>/activations``)."""

    def __init__(self, root: str | Path | None = None, *, shard_size: int = 256) -> None:
        self.root = Path(root).expanduser() if root is not None else cache_dir() / "activations"
        self.shard_size = shard_size

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.root)!r})"

    def rm_command(self, key: str) -> str:
        """The exact command that removes entry ``key`` of this store."""
        return f"polylens cache rm {key} --root {shlex.quote(str(self.root))}"

    def _remedy(self, key: str) -> str:
        return f"remove the entry with `{self.rm_command(key)}` and extract again"

    def _entry(self, key: str) -> Path:
        """The directory of entry ``key``; refused unless ``key`` is a key and stays in the root."""
        if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
            raise PolylensError(
                f"{key!r} is not a store entry key (20 lowercase hex characters, as "
                "`polylens cache ls` shows them); nothing was touched"
            )
        entry = self.root / key
        if entry.is_symlink():
            raise PolylensError(
                f"{entry} is a symbolic link, not a store entry; polylens leaves it alone "
                "(remove the link yourself)"
            )
        # A key cannot climb out by itself; resolving also catches a root reached through links.
        if entry.resolve().parent != self.root.resolve():
            raise PolylensError(f"{entry} resolves outside the store {self.root}; refusing it")
        if entry.exists() and not entry.is_dir():
            raise PolylensError(f"{entry} is a file, not a store entry; move it out of the store")
        return entry

    # -- writing (``interp.extract`` drives these, shard by shard) ---------------------------
    def is_complete(self, key: str) -> bool:
        """Whether entry ``key`` has an intact manifest (one that fails its checksum is logged)."""
        entry = self._entry(key)
        if not (entry / MANIFEST).is_file():
            return False
        try:
            self._read_manifest(key)
        except CorruptFileError as e:
            log.warning("store entry %s: %s; recomputing what cannot be trusted", key, e.reason)
            return False
        return True

    def begin_entry(self, key: str, prompts: list[str]) -> None:
        """Create (or reopen, to resume) entry ``key`` and record its prompts."""
        entry = self._entry(key)
        entry.mkdir(parents=True, exist_ok=True)
        atomic_write_json(entry / PROMPTS, list(prompts), indent=None)

    def shard_ranges(self, n_prompts: int) -> list[tuple[int, int]]:
        """The prompt rows ``[start, stop)`` of each shard of an entry of ``n_prompts`` prompts."""
        return [
            (start, min(start + self.shard_size, n_prompts))
            for start in range(0, n_prompts, self.shard_size)
        ]

    def has_verified_shard(self, key: str, start: int, stop: int) -> bool:
        """Whether the shard of rows ``[start, stop)`` of entry ``key`` is on disk, intact and its.

        A shard without a sidecar, one that differs from it, one whose header names another
        entry (copied in) or other rows (cut with another shard size) is to be recomputed.
        """
        path = self._entry(key) / self._shard_name(start)
        if matches_sidecar(path) is None:
            return False
        return _shard_header(path) == (key, start, stop)

    def write_shard(
        self,
        key: str,
        start: int,
        flat: Float[Tensor, "row layer d_model"],
        offsets: Int[Tensor, " prompt_plus_one"],
    ) -> None:
        """Write the shard of prompts ``start ..`` atomically, then its checksum sidecar.

        Its header records the entry and the rows it holds (one per entry of ``offsets`` but
        the first), so it cannot pass for another entry's shard or another row range.
        """
        path = self._entry(key) / self._shard_name(start)
        stop = start + len(offsets) - 1
        header = {"entry": key, "start": str(start), "stop": str(stop)}
        # Shard first, then its checksum: a kill in between leaves a shard that is redone.
        write_sidecar(path, save_safetensors(path, {"acts": flat, "offsets": offsets}, header))

    def finish_entry(self, key: str, meta: dict, **extra: object) -> None:
        """Seal the manifest of entry ``key`` (``meta`` and ``extra``, shapes, every checksum).

        ``meta`` is the provenance the key was made from (``entry_key(meta) == key``) and holds
        ``n_prompts``; every shard must be written, match its sidecar and hold its own rows.
        Shards left by an earlier attempt with another shard size are removed.
        """
        entry = self._entry(key)
        # Hashed again as the manifest is sealed: another process may have replaced a shard.
        shards = {}
        for start, stop in self.shard_ranges(meta["n_prompts"]):
            name = self._shard_name(start)
            if not self.has_verified_shard(key, start, stop):
                raise PolylensError(
                    f"shard {name} of store entry {key} changed while it was extracted "
                    "(another process writing the same entry?); run the extraction again"
                )
            shards[name] = read_sidecar(entry / name)
        manifest = {
            **meta,
            "key": key,
            **extra,
            "shard_size": self.shard_size,
            "prompts_sha256": sha256_file(entry / PROMPTS),
            "shards": shards,
        }
        write_sealed_json(entry / MANIFEST, manifest)
        for stale in entry.iterdir():
            shard = stale.name.removesuffix(".sha256")
            if _SHARD_PATTERN.fullmatch(shard) and shard not in shards:
                stale.unlink(missing_ok=True)

    def _shard_name(self, start: int) -> str:
        return f"shard-{start // self.shard_size:05d}.safetensors"

    # -- reading ----------------------------------------------------------------------------
    def _read_manifest(self, key: str) -> dict:
        """The sealed manifest of ``key``; ``CorruptFileError`` unless it is intact and whole."""
        path = self.root / key / MANIFEST
        manifest = read_sealed_json(path, remedy=self._remedy(key))
        missing = [f for f in _MANIFEST_FIELDS if f not in manifest]
        if missing:
            raise CorruptFileError(path, f"no {missing[0]!r} field", self._remedy(key))
        if manifest["key"] != key:
            raise CorruptFileError(path, f"it describes entry {manifest['key']}", self._remedy(key))
        names = list(manifest["shards"])
        if not all(_SHARD_PATTERN.fullmatch(name) for name in names):
            raise CorruptFileError(path, "a shard name that is not the store's", self._remedy(key))
        return manifest

    def manifest(self, key: str) -> dict:
        """The manifest of a complete entry (its own checksum verified)."""
        entry = self._entry(key)
        if not (entry / MANIFEST).is_file():
            known = ", ".join(r["key"] for r in self.ls() if r["complete"]) or "none"
            state = (
                "is incomplete (an interrupted extraction)" if entry.is_dir() else "does not exist"
            )
            raise PolylensError(
                f"no complete store entry {key!r} in {self.root}: it {state}; "
                f"complete entries: {known}"
            )
        return self._read_manifest(key)

    def load(
        self, key: str, *, device: str | torch.device = "cpu", verify: bool = True
    ) -> Activations:
        """An entry's activations, checking every file's sha256 unless told not to.

        The manifest and ``prompts.json`` are always checked; ``verify=False`` skips hashing
        the shards (for an entry this process has just checked). Hashing streams each file;
        the activations themselves stay on disk and are read (memory-mapped) when asked for,
        a chunk of layers at a time (``Activations.layer_chunks``) or all at once
        (``.tensor``), landing on ``device``. A shard that changes on disk after this check is
        refused when it is read.
        """
        manifest = self.manifest(key)
        entry = self.root / key
        # Taken before hashing: a shard replaced during or after the check differs from these.
        stamps = {name: _stamp(entry / name) for name in manifest["shards"]}
        problems = self.verify(key) if verify else self._problems(key, manifest, shards=False)
        if problems:
            raise PolylensError(problems[0])
        source = _ShardRows(self, key, manifest["shards"], stamps)
        prompts = json.loads((entry / PROMPTS).read_text(encoding="utf-8"))
        meta = {k: v for k, v in manifest.items() if k != "shards"}
        return Activations(source, source.offsets, manifest["layers"], prompts, meta, device=device)

    def verify(self, key: str) -> list[str]:
        """Problems with an entry, one line each (with the command that removes it); empty if ok.

        An incomplete entry, a corrupted manifest, and every missing or corrupted file are
        problems; an entry that does not exist is an error.
        """
        entry = self._entry(key)
        if not entry.is_dir():
            raise PolylensError(f"no store entry {key!r} in {self.root}; see `polylens cache ls`")
        if not (entry / MANIFEST).is_file():
            return [
                f"store entry {key} is incomplete (an interrupted extraction: the same extract "
                f"resumes it); or remove it with `{self.rm_command(key)}`"
            ]
        try:
            manifest = self._read_manifest(key)
        except CorruptFileError as e:
            return [str(e)]
        return self._problems(key, manifest, shards=True)

    def _problems(self, key: str, manifest: dict, *, shards: bool) -> list[str]:
        files = {PROMPTS: manifest["prompts_sha256"]}
        if shards:
            files.update(manifest["shards"])
        problems = []
        for name, digest in files.items():
            path = self.root / key / name
            if not path.is_file():
                problems.append(f"{name} of store entry {key} is missing; {self._remedy(key)}")
            elif sha256_file(path) != digest:
                problems.append(
                    f"{name} of store entry {key} is corrupted (sha256 mismatch); "
                    f"{self._remedy(key)}"
                )
        return problems or self._coverage_problems(key, manifest)

    def _coverage_problems(self, key: str, manifest: dict) -> list[str]:
        """Whether the shards, in order, hold each of the entry's prompts exactly once.

        Reads only the shards' headers. A shard whose header names its entry and rows (every
        shard this version writes) must name this entry and continue where the last one ended;
        the row counts must add up to ``n_prompts`` either way.
        """
        entry, covered = self.root / key, 0
        for name in manifest["shards"]:
            header, rows = _shard_layout(entry / name)
            if header is not None and header[0] != key:
                return [
                    f"{name} of store entry {key} holds the activations of entry {header[0]}; "
                    f"{self._remedy(key)}"
                ]
            if header is not None and (header[1], header[2]) != (covered, covered + rows):
                return [
                    f"{name} of store entry {key} holds prompts {header[1]}..{header[2] - 1} "
                    f"where prompts {covered}.. belong; {self._remedy(key)}"
                ]
            covered += rows
        if covered != manifest["n_prompts"]:
            return [
                f"the shards of store entry {key} hold {covered} prompts but the entry has "
                f"{manifest['n_prompts']}; {self._remedy(key)}"
            ]
        return []

    def ls(self) -> list[dict]:
        """One summary per entry: ``status`` complete, incomplete or corrupt (with ``problem``).

        Only directories named like a key count as entries; a link named like one is listed as
        ``foreign`` and never followed.
        """
        if not self.root.is_dir():
            return []
        rows = []
        for path in sorted(self.root.iterdir()):
            if not KEY_PATTERN.fullmatch(path.name):
                continue
            if path.is_symlink():
                rows.append(
                    {
                        "key": path.name,
                        "status": "foreign",
                        "complete": False,
                        "bytes": 0,
                        "problem": f"{path} is a symbolic link, not a store entry; "
                        "polylens leaves it alone",
                    }
                )
            elif path.is_dir():
                rows.append(self._summary(path))
        return rows

    def _summary(self, entry: Path) -> dict:
        size = sum(f.lstat().st_size for f in entry.iterdir() if not f.is_symlink())
        row = {"key": entry.name, "status": "incomplete", "complete": False, "bytes": size}
        if (entry / MANIFEST).is_file():
            try:
                m = self._read_manifest(entry.name)
            except PolylensError as e:  # corrupted, or unreadable: that entry only
                row.update(status="corrupt", problem=str(e))
            else:
                row.update(
                    status="complete",
                    complete=True,
                    model=m["model"]["name"],
                    prompts=m["n_prompts"],
                    layers=len(m["layers"]),
                    positions=m["positions"],
                    dtype=m["dtype"],
                )
        return row

    def rm(self, key: str) -> None:
        """Delete an entry, complete or not (never anything but a key's directory in the root)."""
        entry = self._entry(key)
        if not entry.is_dir():
            raise PolylensError(f"no store entry {key!r} in {self.root}")
        shutil.rmtree(entry)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells a file replaced or rewritten since: inode, size, modification time."""
    try:
        st = path.stat()
    except OSError:
        return None  # missing: verification says so
    return st.st_ino, st.st_size, st.st_mtime_ns


class _ShardRows:
    """The rows of a complete entry's shards, read by site range (the ``RowSource`` of ``load``).

    Shards are ``[row, site, width]``, row-major: a range of sites is one contiguous run of
    ``sites x width`` values per row, so a read touches about ``1 / n_sites`` of each shard
    (whole pages, at least) and holds one shard's mapping at a time.

    Each read first checks that the shard is still the file ``load`` verified (inode, size,
    modification time); one replaced since (another process writing the same entry, which
    writes the same bytes) is hashed again and read only if it still matches the manifest.
    """

    def __init__(
        self,
        store: ActivationStore,
        key: str,
        digests: dict[str, str],
        stamps: dict[str, tuple[int, int, int] | None],
    ) -> None:
        self._store, self._key, self._digests, self._stamps = store, key, digests, stamps
        self._entry = store.root / key
        self._rows: list[tuple[str, int, int]] = []
        offsets, base, shapes = [torch.zeros(1, dtype=torch.long)], 0, set()
        for name in digests:
            with self._open(name) as f:
                acts = f.get_slice("acts")
                shape = tuple(acts.get_shape())
                self.dtype = acts[:0].dtype  # an empty read: the dtype, no data
                local = f.get_tensor("offsets").clone()
            shapes.add((shape[1:], self.dtype))
            if shape[0] != int(local[-1]):
                raise PolylensError(
                    f"{name} of store entry {key} holds {shape[0]} rows but its offsets count "
                    f"{int(local[-1])}; {store._remedy(key)}"
                )
            self._rows.append((name, base, base + shape[0]))
            offsets.append(local[1:] + base)
            base += shape[0]
        if len(shapes) != 1:
            raise PolylensError(
                f"the shards of store entry {key} differ in layers, width or dtype; "
                f"{store._remedy(key)}"
            )
        sites_width, _ = shapes.pop()
        self.shape = (base, *sites_width)
        self.offsets = torch.cat(offsets)

    @contextmanager
    def _open(self, name: str) -> Iterator:
        """Shard ``name`` opened, once it is known to be the verified file (or the same bytes)."""
        path = self._entry / name
        if _stamp(path) != self._stamps[name]:
            stamp = _stamp(path)
            if stamp is None or sha256_file(path) != self._digests[name] or _stamp(path) != stamp:
                raise PolylensError(
                    f"{name} of store entry {self._key} changed on disk (or was removed) after "
                    "the entry was loaded and checked; load it again, or "
                    f"{self._store._remedy(self._key)}"
                )
            self._stamps[name] = stamp  # replaced by the same bytes: read on
        with safe_open(str(path), framework="pt") as f:
            yield f

    def read_into(self, out: Tensor, sites: slice) -> None:
        """Copy sites ``sites`` of every row, shard by shard, into ``out``."""
        for name, start, stop in self._rows:
            with self._open(name) as f:
                # A view of the mapping (or a copy of the slice): copied out before it closes.
                out[start:stop].copy_(f.get_slice("acts")[:, sites])


def _shard_header(path: Path) -> tuple[str, int, int] | None:
    """The entry and rows ``[start, stop)`` a shard's header names; None if it names none."""
    try:
        return _shard_layout(path)[0]
    except (OSError, SafetensorError):
        return None


def _shard_layout(path: Path) -> tuple[tuple[str, int, int] | None, int]:
    """What a shard's header says, read once: its entry and rows, and how many prompts it holds.

    The entry and row range are None where the header names none (an older polylens); the count
    comes from ``offsets``, which has one entry more than the shard has prompts.
    """
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        rows = f.get_slice("offsets").get_shape()[0] - 1
    try:
        return (meta["entry"], int(meta["start"]), int(meta["stop"])), rows
    except (KeyError, ValueError):
        return None, rows
