"""The on-disk activation store: content-addressed entries of safetensors shards + a manifest.

An entry's key hashes everything that determines its contents (model fingerprint, prompts,
layers, positions, storage dtype), so asking twice reads back instead of recomputing. Layout::

    <root>/<key>/prompts.json            the prompts, in order
    <root>/<key>/shard-00000.safetensors  prompts [0, shard_size) ...; each written atomically
    <root>/<key>/manifest.json            provenance, shapes, per-shard sha256; written last

An entry is complete only once its manifest exists; an interrupted extraction resumes from the
shards already on disk. Reads are memory-mapped (``safe_open``) and can land on any device.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from interp.errors import PolylensError
from interp.extract import Activations, ExtractionPlan, extract_rows

MANIFEST = "manifest.json"
_KEY_FIELDS = ("model", "prompts_hash", "layers", "positions", "dtype")


def entry_key(meta: dict) -> str:
    """Content address of an extraction: a hash of the fields that determine its tensors."""
    identity = {k: meta[k] for k in _KEY_FIELDS}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


class ActivationStore:
    """A directory of cached extractions (default: ``<polylens cache>/activations``)."""

    def __init__(self, root: str | Path | None = None, *, shard_size: int = 256) -> None:
        from interp.models import cache_dir

        self.root = Path(root) if root is not None else cache_dir() / "activations"
        self.shard_size = shard_size

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.root)!r})"

    # -- writing ----------------------------------------------------------------------------
    def get_or_extract(
        self,
        plan: ExtractionPlan,
        *,
        backend: str = "hooks",
        batch_size: int = 16,
        progress: bool = True,
        backend_options: dict | None = None,
    ) -> Activations:
        """Read the entry for ``plan`` if complete; otherwise extract its missing shards."""
        meta = plan.meta
        key = entry_key(meta)
        entry = self.root / key
        if (entry / MANIFEST).is_file():
            return self.load(key)
        entry.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(entry / "prompts.json", json.dumps(plan.prompts, ensure_ascii=False))
        n = len(plan.prompts)
        starts = range(0, n, self.shard_size)
        todo = [s for s in starts if not self._shard_ok(entry / _shard_name(s, self.shard_size))]
        with tqdm(total=n, desc="extract", unit="prompt", disable=not progress) as bar:
            bar.update(n - sum(min(self.shard_size, n - s) for s in todo))
            for start in todo:
                rows = range(start, min(start + self.shard_size, n))
                flat, offsets = extract_rows(
                    plan,
                    rows,
                    backend=backend,
                    batch_size=batch_size,
                    backend_options=backend_options,
                    on_batch=bar.update,
                )
                self._write_shard(entry / _shard_name(start, self.shard_size), flat, offsets)
        shards = [_shard_name(s, self.shard_size) for s in starts]
        manifest = {
            **meta,
            "key": key,
            "backend": backend,
            "shard_size": self.shard_size,
            "shards": {name: sha256_file(entry / name) for name in shards},
        }
        _atomic_write_text(entry / MANIFEST, json.dumps(manifest, indent=2))
        return self.load(key, verify=False)

    @staticmethod
    def _write_shard(path: Path, flat: torch.Tensor, offsets: torch.Tensor) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({"acts": flat.contiguous(), "offsets": offsets}, str(tmp))
        os.replace(tmp, path)

    @staticmethod
    def _shard_ok(path: Path) -> bool:
        if not path.is_file():
            return False
        try:
            with safe_open(str(path), framework="pt") as f:
                return {"acts", "offsets"} <= set(f.keys())
        except Exception:  # a torn or foreign file: recompute the shard
            return False

    # -- reading ----------------------------------------------------------------------------
    def manifest(self, key: str) -> dict:
        """The manifest of a complete entry."""
        path = self.root / key / MANIFEST
        if not path.is_file():
            known = ", ".join(e["key"] for e in self.ls()) or "none"
            raise PolylensError(
                f"no complete store entry {key!r} in {self.root}; complete entries: {known}"
            )
        return json.loads(path.read_text())

    def load(
        self, key: str, *, device: str | torch.device = "cpu", verify: bool = True
    ) -> Activations:
        """Read an entry back (memory-mapped), checking every shard's sha256 unless told not to."""
        manifest = self.manifest(key)
        if verify:
            problems = self.verify(key)
            if problems:
                raise PolylensError(
                    f"{problems[0]}; run `polylens cache rm {key}` and extract again"
                )
        entry = self.root / key
        parts, offsets, base = [], [torch.zeros(1, dtype=torch.long)], 0
        for name in manifest["shards"]:
            with safe_open(str(entry / name), framework="pt", device=str(device)) as f:
                parts.append(f.get_tensor("acts"))
                local = f.get_tensor("offsets").cpu()
            offsets.append(local[1:] + base)
            base += int(local[-1])
        prompts = json.loads((entry / "prompts.json").read_text(encoding="utf-8"))
        meta = {k: v for k, v in manifest.items() if k != "shards"}
        return Activations(torch.cat(parts), torch.cat(offsets), manifest["layers"], prompts, meta)

    def verify(self, key: str) -> list[str]:
        """Problems with an entry (missing or corrupted shards); empty when it is intact."""
        manifest = self.manifest(key)
        problems = []
        for name, digest in manifest["shards"].items():
            path = self.root / key / name
            if not path.is_file():
                problems.append(f"shard {name} of store entry {key} is missing")
            elif sha256_file(path) != digest:
                problems.append(f"shard {name} of store entry {key} is corrupted (sha256 mismatch)")
        return problems

    def ls(self) -> list[dict]:
        """One summary per entry, complete or not."""
        if not self.root.is_dir():
            return []
        rows = []
        for entry in sorted(p for p in self.root.iterdir() if p.is_dir()):
            size = sum(f.stat().st_size for f in entry.iterdir() if f.is_file())
            row = {"key": entry.name, "complete": (entry / MANIFEST).is_file(), "bytes": size}
            if row["complete"]:
                m = json.loads((entry / MANIFEST).read_text())
                row.update(
                    model=m["model"]["name"],
                    prompts=m["n_prompts"],
                    layers=len(m["layers"]),
                    positions=m["positions"],
                    dtype=m["dtype"],
                )
            rows.append(row)
        return rows

    def rm(self, key: str) -> None:
        """Delete an entry, complete or not."""
        entry = self.root / key
        if not entry.is_dir():
            raise PolylensError(f"no store entry {key!r} in {self.root}")
        shutil.rmtree(entry)


def _shard_name(start: int, shard_size: int) -> str:
    return f"shard-{start // shard_size:05d}.safetensors"
