"""The known/unknown questions the probes read: balanced items, features, labels per language."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import Tensor

from interp.data import load
from interp.data.loader import split_of
from interp.errors import PolylensError
from interp.models import LoadedModel
from probes.features import question_features
from probes.labels import knowledge_labels


def balanced_items(n_per_class: int, seed: int) -> list[str]:
    """``n_per_class`` answerable and ``n_per_class`` unanswerable item ids.

    The same ids serve every language: ``boundary`` is parallel.
    """
    records = load("boundary", langs=["en"])
    known = sorted(r.id for r in records if r.answerable)
    unknown = sorted(r.id for r in records if not r.answerable)
    if min(len(known), len(unknown)) < n_per_class:
        raise PolylensError(f"n_per_class={n_per_class} exceeds the dataset")
    rng = random.Random(seed)
    return sorted(rng.sample(known, n_per_class) + rng.sample(unknown, n_per_class))


def boundary_features(
    model: LoadedModel,
    langs: Sequence[str],
    ids: Sequence[str],
    *,
    labels: str = "construction",
    position: str = "last",
    chat: bool = False,
    batch_size: int = 16,
    store=None,
) -> tuple[dict[str, tuple[Tensor, Tensor]], Tensor]:
    """Per language ``(features [layer, n, d], labels [n])`` of the items ``ids``.

    Also returns the mask of the rows in the ``train`` split (the same rows in every language).
    """
    wanted = set(ids)
    data = {}
    for lang in langs:
        records = [r for r in load("boundary", langs=[lang]) if r.id in wanted]
        x = question_features(
            model,
            [r.question for r in records],
            position=position,
            chat=chat,
            batch_size=batch_size,
            store=store,
        )
        data[lang] = (x, knowledge_labels(model, records, labels))
    order = [r.id for r in load("boundary", langs=[langs[0]]) if r.id in wanted]
    return data, torch.tensor([split_of(i) == "train" for i in order])
