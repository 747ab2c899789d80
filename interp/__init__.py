"""polylens: how does a language model handle many languages inside?

The public surface, as a table of contents (folders in the order data flows):

- ``interp.storage``: ``ActivationStore`` (tensors and manifests; the shard loop is in
  ``interp.extract``), ``Activations``; atomic writes and checksums, provenance
- ``interp.model``: ``load_model``, ``LoadedModel`` (batched ``logits`` and ``generate``),
  ``EMBEDDED``, ``Positions``, ``Site`` and ``recording``; architectures, hooks, backends
- extraction: ``extract`` (``interp.extract``)
- edits: ``intervene``, ``Ablate``, ``Add``, ``Patch``, ``Apply``, ``directional_ablation``,
  ``orthogonalize`` (``interp.interventions``)
- ``interp.lens``: ``apply_lens``, ``LensOutput``, ``first_tokens``, ``collisions``; the tuned
  lens in ``interp.lens.tuned``
- ``interp.analysis``: refusal (``refusal``, ``directions``, ``edit_scores``,
  ``direction_effects``), cross-lingual similarity (``similarity``, ``language_pairs``),
  ``geometry``, ``embeddings``, ``neurons``, factual recall and consistency (``factual``,
  ``factual_data``, ``factual_lens``, ``consistency``), ``shortcut``, ``patching``, ``controls``;
  how often a model refuses, judged two ways (``refusal_behaviour``)
- ``interp.testbeds``: positive controls built from the embedded model: ``refusal``
  (``gemma-3-270m-refusal-en``, built by ``polylens testbed refusal``)
- the language of a text (a generated answer): ``detect_languages``
  (``interp.analysis.language_id``, lingua over polylens's 12 languages)
- statistics: ``interp.metrics``; benchmarks: ``interp.bench`` (measured by ``interp.timing``)
- errors: ``PolylensError`` (one line saying what is wrong and what to do)
"""

from interp.analysis.language_id import detect_languages
from interp.errors import PolylensError
from interp.extract import extract
from interp.interventions import (
    Ablate,
    Add,
    Apply,
    Patch,
    directional_ablation,
    intervene,
    orthogonalize,
)
from interp.lens.logit import LensOutput, apply_lens, collisions, first_tokens
from interp.model.convert import EMBEDDED
from interp.model.models import LoadedModel, load_model
from interp.model.positions import Positions
from interp.model.sites import Site, recording
from interp.storage.activations import Activations
from interp.storage.provenance import __version__
from interp.storage.store import ActivationStore

__all__ = [
    "EMBEDDED",
    "Ablate",
    "Add",
    "Apply",
    "Patch",
    "Site",
    "ActivationStore",
    "Activations",
    "LensOutput",
    "LoadedModel",
    "Positions",
    "PolylensError",
    "__version__",
    "apply_lens",
    "collisions",
    "detect_languages",
    "directional_ablation",
    "extract",
    "first_tokens",
    "intervene",
    "load_model",
    "orthogonalize",
    "recording",
]
