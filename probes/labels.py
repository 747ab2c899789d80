"""Known / unknown labels for the ``boundary`` questions.

Two schemes, and results say which one was used:

- ``construction``: answerable questions are known (1), fabricated-entity and future-event
  questions unknown (0);
- ``model``: an answerable question is known only if the model completes the matching fact's
  cloze correctly (the first line of its greedy continuation, after three solved clozes of the
  same relation, contains the gold object or an alias), so the probe reads the model's knowledge
  rather than the dataset's; unanswerable questions stay unknown.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from interp.data import LANGUAGES, BoundaryQuestion, Fact, load
from interp.errors import PolylensError
from interp.model.models import LoadedModel

SCHEMES = ("construction", "model")


def few_shot_cloze(fact: Fact, pool: Sequence[Fact], n_demos: int = 3) -> str:
    """The fact's cloze after ``n_demos`` solved clozes of the same relation and language.

    A base model continues a bare cloze with anything ("... is a destination for tourists");
    the demonstrations fix the format, so the first line of its continuation is its answer. They
    are drawn with the fact's id as the seed: every language gets the same ones.
    """
    others = sorted(
        (f for f in pool if (f.relation, f.lang) == (fact.relation, fact.lang) and f.id != fact.id),
        key=lambda f: f.id,
    )
    if len(others) < n_demos:
        raise PolylensError(f"{fact.id}: fewer than {n_demos} other facts to demonstrate with")
    language = LANGUAGES.get(fact.lang)
    sep = " " if language is None or language.spaces else ""
    demos = random.Random(fact.id).sample(others, n_demos)
    return "\n".join([f"{d.cloze}{sep}{d.object}" for d in demos] + [fact.cloze])


def is_correct(continuation: str, answers: Sequence[str]) -> bool:
    """Whether a gold answer or alias occurs in the continuation's first line (case-insensitive)."""
    text = continuation.strip(" ").split("\n")[0].casefold()
    return any(a.casefold() in text for a in answers if a)


LABEL_NEW_TOKENS = 8
"""Most tokens of the model's answer under ``model`` labels."""
LABEL_BATCH_SIZE = 16
"""Clozes per generation batch under ``model`` labels."""


def label_prompts(records: Sequence[BoundaryQuestion]) -> tuple[list[int], list[Fact], list[str]]:
    """What ``model`` labels ask: the answerable records' indices, their facts, their clozes."""
    langs = sorted({r.lang for r in records})
    pool = load("facts", langs=langs)
    facts = {(f.id, f.lang): f for f in pool}
    asked = [i for i, r in enumerate(records) if r.answerable]
    clozes = [facts[(records[i].id.removeprefix("real:"), records[i].lang)] for i in asked]
    return asked, clozes, [few_shot_cloze(f, pool) for f in clozes]


def knowledge_labels(
    model: LoadedModel | None, records: Sequence[BoundaryQuestion], scheme: str = "construction"
) -> torch.Tensor:
    """1 for known, 0 for unknown, per record, under ``scheme``."""
    if scheme not in SCHEMES:
        raise PolylensError(f"unknown label scheme {scheme!r}; use {' or '.join(SCHEMES)}")
    labels = torch.tensor([int(r.answerable) for r in records])
    if scheme == "construction":
        return labels
    if model is None:
        raise PolylensError("the 'model' label scheme needs the model to test its answers")
    asked, clozes, prompts = label_prompts(records)
    # Answers are one line: generation stops at the first newline.
    continuations = model.generate(
        prompts,
        max_new_tokens=LABEL_NEW_TOKENS,
        stop="\n",
        batch_size=LABEL_BATCH_SIZE,
        progress=True,
    )
    for i, fact, text in zip(asked, clozes, continuations):
        labels[i] = int(is_correct(text, [fact.object, *fact.aliases]))
    return labels
