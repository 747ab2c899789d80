"""Known / unknown labels for the ``boundary`` questions.

Two schemes, and results say which one was used:

- ``construction``: answerable questions are known (1), fabricated-entity and future-event
  questions unknown (0);
- ``model``: an answerable question is known only if the model completes the matching fact's
  cloze prompt correctly (greedy continuation contains the gold object or an alias), so the probe
  reads the model's knowledge rather than the dataset's; unanswerable questions stay unknown.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from interp.data import BoundaryQuestion, load
from interp.errors import PolylensError
from interp.extract import pad_batch
from interp.models import LoadedModel

SCHEMES = ("construction", "model")


@torch.inference_mode()
def greedy_continuations(
    model: LoadedModel, prompts: Sequence[str], *, max_new_tokens: int = 8, batch_size: int = 16
) -> list[str]:
    """The model's greedy continuation of each prompt (left-padded batches)."""
    out = []
    pad = model.tokenizer.pad_token_id
    for start in tqdm(range(0, len(prompts), batch_size), desc="generate", unit="batch"):
        batch = pad_batch(model.tokenize(prompts[start : start + batch_size]), pad, model.device)
        generated = model.hf.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
        new = generated[:, batch["input_ids"].shape[1] :]
        out += model.tokenizer.batch_decode(new, skip_special_tokens=True)
    return out


def is_correct(continuation: str, answers: Sequence[str]) -> bool:
    """Whether a gold answer or alias occurs in the continuation (case-insensitive)."""
    text = continuation.casefold()
    return any(a.casefold() in text for a in answers if a)


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
    langs = sorted({r.lang for r in records})
    facts = {(f.id, f.lang): f for f in load("facts", langs=langs)}
    asked = [i for i, r in enumerate(records) if r.answerable]
    clozes = [facts[(records[i].id.removeprefix("real:"), records[i].lang)] for i in asked]
    continuations = greedy_continuations(model, [f.cloze for f in clozes])
    for i, fact, text in zip(asked, clozes, continuations):
        labels[i] = int(is_correct(text, [fact.object, *fact.aliases]))
    return labels
