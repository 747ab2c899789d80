"""Language transition of factual answers under the logit lens (Lost in Multilinguality, 2025).

For a fact asked in language L, every layer's last-position residual is decoded with the logit
lens (``interp.lens``), and three token sets are read: ``own`` (the first tokens of the answer in
L), ``other`` (the first tokens of the same fact's answer in every other language, less the
tokens of ``own``: a shared token such as "Paris" in English and French counts for L) and ``en``
(the English answer's first tokens less ``own``; empty for English prompts). The paper's picture
is a language-independent answer in the middle layers and a switch to L in the last ones; the
**takeover layer** is the first layer where the mean probability of ``own`` is above that of
``other`` and stays above through the last layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float

from interp.analysis.factual import FactPrompt
from interp.extract import extract
from interp.lens.logit import LensOutput, apply_lens, first_tokens
from interp.model.models import LoadedModel

__all__ = ["SET_NAMES", "answer_token_sets", "language_transition", "takeover_layer"]

SET_NAMES = ("own", "other", "en")


def answer_token_sets(tokenizer, facts: Sequence[FactPrompt]) -> list[dict[str, list[int]]]:
    """Per fact, the ``own``, ``other`` and ``en`` first-token sets (see the module docstring).

    The same fact id in the other languages of ``facts`` gives the other languages' answers.
    """
    answers: dict[str, dict[str, str]] = {}
    for f in facts:
        answers.setdefault(f.fact_id, {})[f.lang] = f.answer
    cache: dict[str, set[int]] = {}

    def tokens(word: str) -> set[int]:
        if word not in cache:
            cache[word] = set(first_tokens(tokenizer, word))
        return cache[word]

    out = []
    for f in facts:
        own = tokens(f.answer)
        other = set().union(*(tokens(a) for x, a in answers[f.fact_id].items() if x != f.lang))
        en = tokens(answers[f.fact_id]["en"]) if "en" in answers[f.fact_id] else set()
        if f.lang == "en":
            en = set()
        out.append({"own": sorted(own), "other": sorted(other - own), "en": sorted(en - own)})
    return out


def takeover_layer(
    own: Float[torch.Tensor, " layer"], other: Float[torch.Tensor, " layer"], layers: Sequence[int]
) -> int | None:
    """First layer from which ``own > other`` holds at every later layer; None if not at the end."""
    ahead = (own > other).tolist()
    if not ahead or not ahead[-1]:
        return None
    at = len(ahead) - 1
    while at > 0 and ahead[at - 1]:
        at -= 1
    return int(layers[at])


def language_transition(
    model: LoadedModel,
    facts: Sequence[FactPrompt],
    *,
    batch_size: int = 16,
    memory_budget_mb: float = 512,
) -> tuple[LensOutput, list[dict[str, list[int]]]]:
    """Logit-lens readout of ``SET_NAMES`` at every layer, at each fact prompt's last token."""
    model.require_next_token("the logit lens")  # before extracting what it would decode
    acts = extract(
        model,
        [f.prompt for f in facts],
        layers="all",
        positions="last",
        batch_size=batch_size,
        progress=False,
    )
    sets = answer_token_sets(model.tokenizer, facts)
    lens = apply_lens(
        model,
        acts,
        token_sets=sets,
        top_k=1,
        with_entropy=False,
        memory_budget_mb=memory_budget_mb,
    )
    return lens, sets
