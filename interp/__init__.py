"""polylens: how does a language model handle many languages inside?

The public surface, as a table of contents:

- models: ``load_model``, ``LoadedModel`` (batched ``logits`` and ``generate``), ``EMBEDDED``
- extraction: ``extract``, ``Activations``, ``Positions``
- storage: ``ActivationStore`` (tensors and manifests; the shard loop is in ``interp.extract``)
- sites and edits: ``Site``, ``recording``, ``intervene``, ``Ablate``, ``Add``, ``Patch``,
  ``Apply``, ``directional_ablation``, ``orthogonalize`` (``interp.sites``,
  ``interp.interventions``)
- lenses: ``apply_lens``, ``LensOutput``, ``first_tokens``, ``collisions`` (tuned lens:
  ``interp.tuned_lens``)
- statistics and geometry: ``interp.metrics``, ``interp.geometry``
- controls of lens readouts (token collisions, per-word demonstrations): ``interp.controls``
- cross-lingual similarity, token-embedding geometry, language neurons: ``interp.similarity``,
  ``interp.embeddings``, ``interp.neurons``
- factual recall and consistency: ``interp.factual`` (candidate log-probs, ranking, generation
  scorer), ``interp.factual_data``, ``interp.consistency``, ``interp.factual_lens``
- refusal: ``interp.refusal`` (templates, refusal score, judge, user data) and
  ``interp.directions`` (diff-in-means candidates, batched selection, effects, transfer)
- final-layer linear shortcut and cross-lingual subject patching: ``interp.shortcut``,
  ``interp.patching``
- errors: ``PolylensError`` (one line saying what is wrong and what to do)
"""

from interp.activations import Activations
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
from interp.lens import LensOutput, apply_lens, collisions, first_tokens
from interp.models import EMBEDDED, LoadedModel, load_model
from interp.positions import Positions
from interp.provenance import __version__
from interp.sites import Site, recording
from interp.store import ActivationStore

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
    "directional_ablation",
    "extract",
    "first_tokens",
    "intervene",
    "load_model",
    "orthogonalize",
    "recording",
]
