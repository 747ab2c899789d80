"""Refusal prompts and how refusal is measured: templates, the refusal score, the judge, user data.

A ``RefusalTemplate`` wraps an instruction for one language: the model's own chat template
(``chat_template``) or, for base models, a few-shot dialogue whose assistant refuses harmful
requests (``incontext_template``). The tokens it puts after the instruction are found from the
tokenized prompts (``post_instruction_count``), never hard-coded.

Two judges of refusal, after Arditi et al. 2024:

- the refusal score, ``log P(opener) - log(1 - P(opener))`` at the last position, where
  ``P(opener)`` is the next-token mass on the first tokens of the language's refusal openers;
- the generation judge: a greedy continuation matched against the language's refusal phrases.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from interp.checks import read_text_file
from interp.data.refusal import DIALOGUES
from interp.data.user import language_files
from interp.errors import PolylensError
from interp.model.models import LoadedModel

_SENTINEL = "\uf8ffINSTRUCTION\uf8ff"


@dataclass(frozen=True)
class RefusalTemplate:
    """How an instruction becomes a prompt in one language, and what refusing looks like there."""

    lang: str
    prefix: str
    suffix: str
    answer_prefix: str
    """What the model writes before its answer's first word (a space after ``"Assistant:"``)."""
    openers: tuple[str, ...]
    phrases: tuple[str, ...]
    stop: tuple[str, ...] = ()
    """Strings that end a generated answer (the next dialogue turn)."""

    def wrap(self, instructions: Sequence[str]) -> list[str]:
        """The prompts: each instruction between the template's prefix and suffix."""
        return [f"{self.prefix}{text}{self.suffix}" for text in instructions]


def incontext_template(lang: str) -> RefusalTemplate:
    """A few-shot dialogue in ``lang`` whose assistant helps with safe and refuses harmful asks."""
    if lang not in DIALOGUES:
        raise PolylensError(
            f"no in-context refusal dialogue for {lang!r}; have {', '.join(DIALOGUES)}"
        )
    d = DIALOGUES[lang]
    label_end = d.colon.rstrip()
    turns = "".join(f"{d.user}{d.colon}{q}\n{d.assistant}{d.colon}{a}\n\n" for q, a in d.shots)
    return RefusalTemplate(
        lang,
        f"{d.header}\n\n{turns}{d.user}{d.colon}",
        f"\n{d.assistant}{label_end}",
        d.colon[len(label_end) :],
        d.openers,
        d.phrases,
        stop=("\n",),
    )


def chat_template(model: LoadedModel, lang: str) -> RefusalTemplate:
    """The model's own chat template around the instruction, with ``lang``'s refusal text."""
    if lang not in DIALOGUES:
        raise PolylensError(f"no refusal openers for {lang!r}; have {', '.join(DIALOGUES)}")
    prompt = model.apply_chat_template([_SENTINEL])[0]
    prefix, found, suffix = prompt.partition(_SENTINEL)
    if not found:
        raise PolylensError(f"{model.name}'s chat template drops the user message")
    d = DIALOGUES[lang]
    stop = tuple(t for t in (model.tokenizer.eos_token,) if t)
    return RefusalTemplate(lang, prefix, suffix, "", d.openers, d.phrases, stop)


def make_template(model: LoadedModel, lang: str, kind: str) -> RefusalTemplate:
    """``kind`` is ``incontext`` (few-shot dialogue, any model) or ``chat`` (its chat template)."""
    if kind == "incontext":
        return incontext_template(lang)
    if kind == "chat":
        return chat_template(model, lang)
    raise PolylensError(f"unknown refusal template {kind!r}; use incontext or chat")


def post_instruction_count(model: LoadedModel, prompts: Sequence[str]) -> int:
    """How many final tokens every prompt shares: the tokens the template puts after the user.

    Found from the tokenized prompts (the longest common token suffix of all of them), so
    tokenizers that merge across the instruction's end are handled; at least one token.
    """
    ids = model.tokenize(list(prompts))
    if len(ids) < 2:
        raise PolylensError("need at least two different prompts to find the template's tokens")
    n = min(len(x) for x in ids)
    count = 0
    while count < n and len({x[-1 - count] for x in ids}) == 1:
        count += 1
    if count == 0:
        raise PolylensError("the prompts share no final token; is the template applied?")
    return count


def opener_token_ids(model: LoadedModel, template: RefusalTemplate) -> list[int]:
    """The first token of each opener as the model would write it after the template."""
    out: list[int] = []
    for opener in template.openers:
        ids = model.tokenizer(template.answer_prefix + opener, add_special_tokens=False)[
            "input_ids"
        ]
        if ids and model.tokenizer.decode(ids[:1]).strip() == "" and len(ids) > 1:
            ids = ids[1:]  # a lone space token says nothing about refusing
        if ids and ids[0] not in out:
            out.append(ids[0])
    if not out:
        raise PolylensError(f"no refusal opener of {template.lang!r} tokenizes to anything")
    return out


def refusal_score(
    logits: Float[Tensor, "prompt vocab"], opener_ids: Sequence[int]
) -> Float[Tensor, " prompt"]:
    """``log P - log(1 - P)`` with ``P`` the next-token probability of the openers."""
    logp = logits.float().log_softmax(-1)
    log_p = logp[:, list(opener_ids)].logsumexp(-1)
    # log(1 - P) from the complement's mass, stable where P is near 1.
    mask = torch.ones(logp.shape[-1], dtype=torch.bool, device=logp.device)
    mask[list(opener_ids)] = False
    log_not = logp[:, mask].logsumexp(-1)
    return log_p - log_not


def judge(texts: Sequence[str], phrases: Sequence[str], *, head: int = 80) -> list[bool]:
    """Whether each generated answer refuses: a refusal phrase in its first ``head`` characters."""
    lowered = [p.lower() for p in phrases]
    return [any(p in t[:head].lower() for p in lowered) for t in texts]


# -- user data ----------------------------------------------------------------------------------


def split_items(
    items: Sequence[str], *, n_val: int, n_test: int, seed: int, n_train: int | None = None
) -> dict[str, list[str]]:
    """Shuffle ``items`` with ``seed`` and cut test, val, then train (the rest, or ``n_train``)."""
    order = list(items)
    random.Random(seed).shuffle(order)
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return {"train": train[:n_train] if n_train else train, "val": val, "test": test}


def read_instruction_file(path: str | Path) -> list[str]:
    """Instructions of a JSON list of ``{"instruction": ..., "category": ...}`` (public format).

    Read with ``interp.checks.read_text_file``: UTF-8, a byte-order mark dropped.

    Raises:
        PolylensError: one line naming the file when it is missing, cannot be read, is not UTF-8
            or not JSON, is not a list, or has an item without text ``instruction``.
    """
    path = Path(path).expanduser()
    text = read_text_file(path, "instruction file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise PolylensError(f"{path} is not valid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(data, list):
        raise PolylensError(f"{path} holds a {type(data).__name__}, not a JSON list of items")
    out = []
    for i, item in enumerate(data):
        text = item.get("instruction") if isinstance(item, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise PolylensError(
                f"{path}: item {i} has no text 'instruction'; each item is "
                '{"instruction": "...", "category": "..."}'
            )
        out.append(text.strip())
    return out


def read_user_data(
    directory: str | Path, langs: Sequence[str], *, need: int
) -> dict[str, tuple[list[str], list[str]]]:
    """``{lang: (harmful, harmless)}`` from ``<dir>/harmful_<lang>.json``, ``harmless_<lang>.json``.

    Each file has at least ``need`` instructions (enough for every split).
    """
    files = {
        kind: language_files(directory, langs, f"{kind}_{{lang}}.json", "safety data")
        for kind in ("harmful", "harmless")
    }
    out = {}
    for lang in langs:
        pair = []
        for kind in ("harmful", "harmless"):
            path = files[kind][lang]
            items = read_instruction_file(path)
            if len(items) < need:
                raise PolylensError(
                    f"{path} has {len(items)} instructions; the splits need at least {need}"
                )
            pair.append(items)
        out[lang] = (pair[0], pair[1])
    return out
