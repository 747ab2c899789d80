"""Refusal prompts and how refusal is measured: templates, the refusal score, the judge, user data.

A ``RefusalTemplate`` wraps an instruction for one language: the model's own chat template
(``chat_template``) or, for base models, a few-shot dialogue whose assistant refuses harmful
requests (``incontext_template``). The tokens it puts after the instruction are found from the
tokenized prompts (``post_instruction_count``), never hard-coded.

Two judges of refusal, after Arditi et al. 2024:

- the refusal score, ``log P(opener) - log(1 - P(opener))`` at the last position, where
  ``P(opener)`` is the next-token mass on the first tokens of the language's refusal openers;
- the generation judge: a greedy continuation matched against the language's refusal phrases.

The user's instructions come as the papers publish them or in polylens's own layout, told apart
by the files in the directory (``safety_layout``):

- Arditi et al.'s ``dataset/splits``: ``harmful_train.json``, ``harmful_val.json``,
  ``harmful_test.json`` and the same for ``harmless`` (English);
- PolyRefuse's ``{harmful,harmless}_{train,val,test}_translated_<lang>.json`` (its English only
  for the test split: Arditi's files beside them give the English train and val splits);
- polylens's own ``harmful_<lang>.json`` and ``harmless_<lang>.json``, split with the seed.

Every file is a JSON list of ``{"instruction": ..., "category": ...}`` items.
"""

from __future__ import annotations

import json
import random
import re
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
    """The model's own chat template around the instruction, with ``lang``'s refusal text.

    English's refusal openers and phrases are added to every language's: a chat model may
    refuse in English whatever it is asked in.
    """
    if lang not in DIALOGUES:
        raise PolylensError(f"no refusal openers for {lang!r}; have {', '.join(DIALOGUES)}")
    prompt = model.apply_chat_template([_SENTINEL])[0]
    prefix, found, suffix = prompt.partition(_SENTINEL)
    if not found:
        raise PolylensError(f"{model.name}'s chat template drops the user message")
    d, en = DIALOGUES[lang], DIALOGUES["en"]
    # A chat model may refuse in English whatever the language it is asked in (one tuned in
    # English only does): both judges of every language take English refusals too, and the
    # answer's language (interp.analysis.language_id) tells which language it refused in.
    openers = tuple(dict.fromkeys(d.openers + en.openers))
    phrases = tuple(dict.fromkeys(d.phrases + en.phrases))
    stop = tuple(t for t in (model.tokenizer.eos_token,) if t)
    return RefusalTemplate(lang, prefix, suffix, "", openers, phrases, stop)


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

    polylens's own layout: one file per class and language, split by the caller with the seed
    (``split_items``); each file has at least ``need`` instructions (enough for every split).
    Published splits are read by ``read_published_splits``.
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


SPLITS = ("train", "val", "test")
"""The published splits, by purpose: candidates, selection, effects."""
SAFETY_LAYOUTS = {
    "arditi": "Arditi et al.'s splits (<kind>_<split>.json)",
    "polyrefuse": "PolyRefuse's splits (<kind>_<split>_translated_<lang>.json)",
    "polylens": "polylens's own (harmful_<lang>.json, harmless_<lang>.json)",
}
"""The user-data layouts of refusal instructions, as results and errors name them."""
_PURPOSE = {
    "train": "the candidate directions",
    "val": "selecting the direction",
    "test": "measuring its effects",
}
_SPLIT_FILE = re.compile(r"(harmful|harmless)_(train|val|test)(_translated_[A-Za-z_-]+)?\.json")


def safety_layout(directory: str | Path) -> str:
    """Which layout of ``SAFETY_LAYOUTS`` the user's safety directory holds, told from its files.

    A file named like a published split (``harmful_val.json``,
    ``harmless_test_translated_ja.json``) means the published splits: ``polyrefuse`` when a
    translated one is there, else ``arditi``; otherwise polylens's own layout.

    Raises:
        PolylensError: one line when the directory is missing.
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise PolylensError(
            f"safety data directory {directory} does not exist or is not a directory"
        )
    matches = [m for p in directory.iterdir() if (m := _SPLIT_FILE.fullmatch(p.name))]
    if not matches:
        return "polylens"
    return "polyrefuse" if any(m.group(3) for m in matches) else "arditi"


def published_split_file(directory: str | Path, kind: str, split: str, lang: str) -> Path:
    """The file of one published split of ``kind`` in ``lang``.

    PolyRefuse's ``<kind>_<split>_translated_<lang>.json`` first; for English, Arditi et al.'s
    ``<kind>_<split>.json`` when PolyRefuse has none (it publishes English only for the test
    split).

    Raises:
        PolylensError: one line naming the file(s) looked for, the split and its purpose.
    """
    directory = Path(directory).expanduser()
    names = [f"{kind}_{split}_translated_{lang}.json"]
    if lang == "en":
        names.append(f"{kind}_{split}.json")
    for name in names:
        if (directory / name).is_file():
            return directory / name
    hint = (
        " (PolyRefuse publishes English only for the test split: put Arditi et al.'s "
        f"{names[-1]} beside it)"
        if lang == "en" and split != "test"
        else ""
    )
    raise PolylensError(
        f"safety data directory {directory} has no {' or '.join(names)} for the {split} split of "
        f"language {lang!r}, used for {_PURPOSE[split]}{hint}; add it or drop the language from "
        "langs"
    )


def read_published_splits(
    directory: str | Path,
    langs: Sequence[str],
    *,
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int,
) -> dict[str, dict[str, dict[str, list[str]]]]:
    """``{lang: {"harmful"|"harmless": {"train"|"val"|"test": [...]}}}`` from published splits.

    Each split keeps its purpose: train gives the candidate directions (at most ``n_train``
    instructions), val selects the direction (``n_val``), test measures its effects
    (``n_test``). A split longer than that is sampled with the seed, the same positions in every
    language (PolyRefuse's files are parallel), kept in file order.

    Args:
        directory: a folder of Arditi et al.'s and/or PolyRefuse's split files.
        langs: the languages to read.
        n_train: most instructions per class for the candidates.
        n_val: instructions per class for the selection.
        n_test: instructions per class for the effects.
        seed: seed of the sampling.

    Raises:
        PolylensError: one line for a missing split file (naming the file looked for), a file
            that is not a list of instructions (``read_instruction_file``), or a split with fewer
            instructions than it needs (2 for train).
    """
    wanted = {"train": ("n_train", n_train), "val": ("n_val", n_val), "test": ("n_test", n_test)}
    out: dict[str, dict[str, dict[str, list[str]]]] = {}
    for lang in langs:
        for kind in ("harmful", "harmless"):
            for split in SPLITS:
                path = published_split_file(directory, kind, split, lang)
                items = read_instruction_file(path)
                field, n = wanted[split]
                least = 2 if split == "train" else n
                if len(items) < least:
                    raise PolylensError(
                        f"{path} has {len(items)} instructions; {_PURPOSE[split]} needs at least "
                        f"{least}" + (f" (lower {field})" if split != "train" else "")
                    )
                if len(items) > n:
                    rng = random.Random(f"{seed}:{kind}:{split}")
                    items = [items[i] for i in sorted(rng.sample(range(len(items)), n))]
                out.setdefault(lang, {}).setdefault(kind, {})[split] = items
    return out
