"""A fitted probe as an artifact: safetensors weights plus a JSON record of what it is.

The record (written last, sealed with its own sha256) holds the weights' sha256; loading checks
both, so a flipped bit is refused instead of loaded.
"""

from __future__ import annotations

from pathlib import Path

from interp.errors import PolylensError
from interp.storage.files import (
    CorruptFileError,
    load_safetensors,
    read_sealed_json,
    save_safetensors,
    write_sealed_json,
)
from interp.storage.provenance import provenance
from probes.linear import LinearProbe

_TENSORS = ("weight", "bias", "mean", "std")
_WEIGHTS, _RECORD = ".safetensors", ".json"


def save_probe(probe: LinearProbe, path: str | Path, info: dict) -> Path:
    """Write ``<path>.safetensors`` and ``<path>.json``; returns the weights' path.

    ``path`` names the probe: a dot in it is part of the name (``probe_C0.1`` and
    ``probe_C0.5`` are two probes), only a trailing ``.safetensors`` or ``.json`` is taken for
    the artifact's own extension. ``info`` should hold at least ``model``
    (``LoadedModel.identity``), the layers, language(s), label scheme, metrics and dataset hash;
    the polylens version is added.
    """
    weights, record = _artifact_files(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: getattr(probe, name).detach().cpu() for name in _TENSORS}
    body = provenance(
        info.get("model"),
        **{k: v for k, v in info.items() if k != "model"},
        normalisation="per-layer standardise",
        weights_sha256=save_safetensors(weights, tensors),
    )
    write_sealed_json(record, body)
    return weights


def load_probe(path: str | Path, model=None) -> tuple[LinearProbe, dict]:
    """Read a probe back; with ``model``, refuse a probe fitted on another model."""
    weights, record = _artifact_files(path)
    name = weights.name.removesuffix(_WEIGHTS)
    if not weights.is_file() or not record.is_file():
        raise PolylensError(
            f"no probe {name!r} in {weights.parent} (need {weights.name} and {record.name})"
        )
    remedy = f"delete {weights} and {record} and fit the probe again"
    info = read_sealed_json(record, remedy=remedy)
    if not isinstance(info.get("weights_sha256"), str):
        raise CorruptFileError(record, "no weights_sha256", remedy)
    if model is not None and info.get("model") != model.identity:
        raise PolylensError(
            f"probe {name} was fitted on {info.get('model')}, not on {model.identity}; "
            "fit it again on this model"
        )
    tensors = load_safetensors(weights, info["weights_sha256"], remedy=remedy)
    return LinearProbe(*(tensors[name] for name in _TENSORS)), info


def _artifact_files(path: str | Path) -> tuple[Path, Path]:
    """The weights and record files of the probe named by ``path``.

    Names are names: ``with_suffix`` would take ``.1`` of ``probe_C0.1`` for an extension and
    send two probes to the same files, so only the artifact's own extensions are removed.
    """
    path = Path(path)
    name = next(
        (path.name[: -len(e)] for e in (_WEIGHTS, _RECORD) if path.name.endswith(e)), path.name
    )
    if not name:
        raise PolylensError(f"{path} names no probe; give a name such as probes/fr-layer9")
    return path.with_name(name + _WEIGHTS), path.with_name(name + _RECORD)
