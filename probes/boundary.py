"""The known/unknown questions the probes read: balanced items, features, labels per language."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from interp.data import BoundaryQuestion, load
from interp.data.loader import split_of
from interp.errors import PolylensError
from interp.model.models import LoadedModel
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


@dataclass
class BoundaryData:
    """Features and labels of the same items in every language, and what each row is."""

    features: dict[str, tuple[Tensor, Tensor]]
    """language -> (features [layer, n, d], labels [n])."""
    ids: list[str]
    """Item id of each row."""
    train: Tensor
    """[n] bool: the row is in the train split."""
    answerable: Tensor
    """[n] bool: the question has an answer (its label may still be 0 under ``model`` labels)."""
    groups: list[str]
    """What each row asks about: the relation of an answerable question (``capital``,
    ``currency``, ...), the construction of an unanswerable one (``future_event``, ...). The
    control task shuffles labels within these groups, and splits balance them."""


def language_records(lang: str, ids: Sequence[str]) -> list[BoundaryQuestion]:
    """The questions ``ids`` in ``lang``, in the dataset's order."""
    wanted = set(ids)
    return [r for r in load("boundary", langs=[lang]) if r.id in wanted]


def boundary_features(
    model: LoadedModel,
    langs: Sequence[str],
    ids: Sequence[str],
    *,
    labels: str = "construction",
    position: str | None = None,
    chat: bool = False,
    batch_size: int = 16,
    store=None,
) -> BoundaryData:
    """Features and labels of the items ``ids`` in each language."""
    features = {}
    for lang in langs:
        records = language_records(lang, ids)
        x = question_features(
            model,
            [r.question for r in records],
            position=position,
            chat=chat,
            batch_size=batch_size,
            store=store,
        )
        features[lang] = (x, knowledge_labels(model, records, labels))
    rows = language_records(langs[0], ids)
    return BoundaryData(
        features,
        [r.id for r in rows],
        torch.tensor([split_of(r.id) == "train" for r in rows]),
        torch.tensor([r.answerable for r in rows]),
        [question_group(r) for r in rows],
    )


def question_group(record: BoundaryQuestion) -> str:
    """What a question asks about: its relation, or its construction when unanswerable.

    ``real:capital:FR`` -> ``capital``; an unanswerable question gives its type
    (``fabricated_country``, ``future_event``, ...).
    """
    if record.answerable:
        parts = record.id.split(":")
        if len(parts) == 3:
            return parts[1]
    return record.type
