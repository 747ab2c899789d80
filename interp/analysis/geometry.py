"""Geometry of representations across languages: centroids, their PCA, language offsets.

Features are parallel across languages: ``features[lang]`` is ``[layer, item, d_model]`` and item
i is the same question (sentence, fact) in every language.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from jaxtyping import Float
from torch import Tensor


def language_centroids(
    features: Mapping[str, Float[Tensor, "layer item d_model"]],
) -> Float[Tensor, "layer lang d_model"]:
    """Mean representation of each language at every layer, languages in ``features`` order."""
    return torch.stack([x.mean(1) for x in features.values()], dim=1)


def centroid_pca(centroids: Float[Tensor, "lang d_model"], k: int = 2) -> Float[Tensor, "lang k"]:
    """Coordinates of the centroids on their first ``k`` principal components (centred)."""
    c = centroids - centroids.mean(0)
    return c @ torch.linalg.svd(c, full_matrices=False).Vh[:k].T


def language_offset_r2(
    features: Float[Tensor, "layer item d_model"], reference: Float[Tensor, "layer item d_model"]
) -> Float[Tensor, " layer"]:
    """How much of the difference to a reference language one constant shift explains, per layer.

    ``diff = features - reference`` (parallel items: same rows); the R^2 of the model
    ``diff = mean(diff)`` over items and dimensions. 1 means the language is the reference plus
    a fixed offset at that layer.
    """
    diff = features - reference
    shift = diff.mean(1, keepdim=True)
    return 1 - (diff - shift).square().sum((1, 2)) / diff.square().sum((1, 2))
