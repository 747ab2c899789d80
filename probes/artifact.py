"""A fitted probe as an artifact: safetensors weights plus a JSON record of what it is."""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import load_file, save_file

from interp.errors import PolylensError
from probes.linear import LinearProbe

_TENSORS = ("weight", "bias", "mean", "std")


def save_probe(probe: LinearProbe, path: str | Path, info: dict) -> Path:
    """Write ``<path>.safetensors`` and ``<path>.json``.

    ``info`` should hold at least ``model`` (``LoadedModel.identity``), the layers, language(s),
    label scheme, metrics and dataset hash; the polylens version is added.
    """
    from interp import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: getattr(probe, name).detach().cpu().contiguous() for name in _TENSORS}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path.with_suffix(".safetensors"))
    record = {**info, "polylens_version": __version__, "normalisation": "per-layer standardise"}
    path.with_suffix(".json").write_text(json.dumps(record, indent=2, ensure_ascii=False))
    return path.with_suffix(".safetensors")


def load_probe(path: str | Path, model=None) -> tuple[LinearProbe, dict]:
    """Read a probe back; with ``model``, refuse a probe fitted on another model."""
    path = Path(path).with_suffix("")
    weights, record = path.with_suffix(".safetensors"), path.with_suffix(".json")
    if not weights.is_file() or not record.is_file():
        raise PolylensError(f"no probe at {path} (need {weights.name} and {record.name})")
    info = json.loads(record.read_text())
    if model is not None and info.get("model") != model.identity:
        raise PolylensError(
            f"probe {path.name} was fitted on {info.get('model')}, not on {model.identity}; "
            "fit it again on this model"
        )
    tensors = load_file(str(weights))
    return LinearProbe(*(tensors[name] for name in _TENSORS)), info
