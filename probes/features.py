"""Probe features: the residual stream at the question's tokens, located in the tokenized prompt.

With a chat template the question sits inside template text; its tokens are found from the
tokenizer's character offsets, never from a hard-coded offset.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import PolylensError
from interp.extract import extract
from interp.model.models import LoadedModel


def question_spans(
    model: LoadedModel, questions: Sequence[str], *, chat: bool
) -> tuple[list[str], list[tuple[int, int]]]:
    """Prompts (template applied when ``chat``) and the token span of each question in them."""
    prompts = model.apply_chat_template(list(questions)) if chat else list(questions)
    spans = []
    for question, prompt in zip(questions, prompts):
        start = prompt.rfind(question)
        if start < 0:
            raise PolylensError("the chat template changed the question text; cannot locate it")
        end = start + len(question)
        enc = model.tokenizer(prompt, add_special_tokens=True, return_offsets_mapping=True)
        tokens = [
            i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < end and b > start
        ]
        if not tokens:
            raise PolylensError(f"no token of the question {question[:40]!r} found in its prompt")
        spans.append((tokens[0], tokens[-1] + 1))
    return prompts, spans


def question_features(
    model: LoadedModel,
    questions: Sequence[str],
    *,
    position: str | None = None,
    chat: bool = False,
    batch_size: int = 16,
    store=None,
) -> Float[Tensor, "layer n d_model"]:
    """Residuals at every layer at the question's last token, or averaged over its tokens.

    ``position=None`` is the model's default: ``last``, and ``mean`` for an encoder.
    """
    position = model.default_positions if position is None else position
    if position not in ("last", "mean"):
        raise PolylensError(f"unknown question position {position!r}; use last or mean")
    prompts, spans = question_spans(model, questions, chat=chat)
    if position == "last":
        acts = extract(
            model, prompts, positions=[b - 1 for _, b in spans], batch_size=batch_size, store=store
        )
        return acts.tensor.transpose(0, 1).float()
    acts = extract(model, prompts, positions=spans, batch_size=batch_size, store=store)
    return torch.stack([rows.float().mean(0) for rows in acts.per_prompt()]).transpose(0, 1)
