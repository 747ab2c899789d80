"""A fitted probe as an artifact: safetensors weights plus a JSON record of what it is.

The record (written last, sealed with its own sha256) holds the weights' sha256; loading checks
both, so a flipped bit is refused instead of loaded.
"""

from __future__ import annotations

from pathlib import Path

from interp.errors import PolylensError
from interp.files import (
    CorruptFileError,
    load_safetensors,
    read_sealed_json,
    save_safetensors,
    write_sealed_json,
)
from interp.provenance import provenance
from probes.linear import LinearProbe

_TENSORS = ("weight", "bias", "mean", "std")


def save_probe(probe: LinearProbe, path: str | Path, info: dict) -> Path:
    """Write ``<path>.safetensors`` and ``<path>.json``.

    ``info`` should hold at least ``model`` (``LoadedModel.identity``), the layers, language(s),
    label scheme, metrics and dataset hash; the polylens version is added.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: getattr(probe, name).detach().cpu() for name in _TENSORS}
    weights = path.with_suffix(".safetensors")
    record = provenance(
        info.get("model"),
        **{k: v for k, v in info.items() if k != "model"},
        normalisation="per-layer standardise",
        weights_sha256=save_safetensors(weights, tensors),
    )
    write_sealed_json(path.with_suffix(".json"), record)
    return weights


def load_probe(path: str | Path, model=None) -> tuple[LinearProbe, dict]:
    """Read a probe back; with ``model``, refuse a probe fitted on another model."""
    path = Path(path).with_suffix("")
    weights, record = path.with_suffix(".safetensors"), path.with_suffix(".json")
    if not weights.is_file() or not record.is_file():
        raise PolylensError(f"no probe at {path} (need {weights.name} and {record.name})")
    remedy = f"delete {weights} and {record} and fit the probe again"
    info = read_sealed_json(record, remedy=remedy)
    if not isinstance(info.get("weights_sha256"), str):
        raise CorruptFileError(record, "no weights_sha256", remedy)
    if model is not None and info.get("model") != model.identity:
        raise PolylensError(
            f"probe {path.name} was fitted on {info.get('model')}, not on {model.identity}; "
            "fit it again on this model"
        )
    tensors = load_safetensors(weights, info["weights_sha256"], remedy=remedy)
    return LinearProbe(*(tensors[name] for name in _TENSORS)), info
