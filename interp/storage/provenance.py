"""Provenance: what every saved artifact records about where it came from.

A store manifest, a tuned lens, a probe and a converted model all carry the same fields: the
model's identity (``LoadedModel.identity``), the polylens version, and a hash of the data they
were made from where there is one (e.g. ``prompts_hash``, ``dataset_sha256``). They are written
with ``interp.storage.files`` (atomic, checksummed). A low module: it imports nothing from polylens.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("polylens")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"


def provenance(model_identity: dict | None, **extra: object) -> dict:
    """The provenance record of an artifact: ``model``, then ``extra``, then ``polylens_version``.

    Args:
        model_identity: ``LoadedModel.identity`` (name and weight fingerprint) of the model the
            artifact comes from, or a description of its source where no model is loaded yet.
        **extra: what else identifies the artifact: its data hash (``prompts_hash``,
            ``dataset_sha256``), its config, checksums of the files it describes.
    """
    return {"model": model_identity, **extra, "polylens_version": __version__}
