"""Read the bundled JSONL files (one item per line, every language inside) into typed records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from interp.data.languages import LANGUAGES, check_langs
from interp.data.records import BoundaryQuestion, Fact, Instruction, Prompt, Sentence, Word
from interp.data.templates import fill
from interp.errors import PolylensError

DATA_DIR = Path(__file__).parent
SPLITS = ("train", "test")
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Dataset:
    """How to turn one JSONL item into the record of one language."""

    name: str
    description: str
    per_language_field: str
    """The item field whose keys are the languages the item covers."""
    make: Callable[[dict, str], object]


def _word(item: dict, lang: str) -> Word:
    return Word(item["id"], lang, item["gloss"], item["category"], tuple(item["forms"][lang]))


def _fact(item: dict, lang: str) -> Fact:
    subject, obj = item["subject"][lang], item["object"][lang]
    return Fact(
        item["id"],
        lang,
        item["relation"],
        item["subject_code"],
        item["object_code"],
        subject,
        obj,
        tuple(item["aliases"].get(lang, [])),
        fill(item["relation"], lang, "cloze", subject),
        fill(item["relation"], lang, "question", subject),
    )


def _boundary(item: dict, lang: str) -> BoundaryQuestion:
    answers = tuple(item.get("answers", {}).get(lang, []))
    return BoundaryQuestion(
        item["id"], lang, item["type"], item["answerable"], item["question"][lang], answers
    )


def _instruction(item: dict, lang: str) -> Instruction:
    return Instruction(item["id"], lang, item["harmful"], item["category"], item["text"][lang])


def _sentence(item: dict, lang: str) -> Sentence:
    return Sentence(item["id"], lang, item["topic"], item["text"][lang])


def _prompt(item: dict, lang: str) -> Prompt:
    return Prompt(item["id"], lang, item["kind"], item["topic"], item["text"][lang])


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("words", "concrete concepts with their forms in every language", "forms", _word),
        Dataset(
            "facts", "CLDR-derived factual relations with cloze/question prompts", "subject", _fact
        ),
        Dataset(
            "boundary",
            "answerable vs unanswerable questions (fabricated, future)",
            "question",
            _boundary,
        ),
        Dataset("safety", "harmful and harmless instructions", "text", _instruction),
        Dataset("parallel", "parallel sentences of varied topic and length", "text", _sentence),
        Dataset(
            "freeform",
            "prompts that invite a free answer (questions, sentence beginnings)",
            "text",
            _prompt,
        ),
    )
}


def names() -> list[str]:
    """The bundled datasets."""
    return list(DATASETS)


def _dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise PolylensError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    return DATASETS[name]


@cache
def read_items(name: str) -> tuple[dict, ...]:
    """The raw items of a dataset, with the file and line of any malformed line in the error."""
    path = DATA_DIR / f"{_dataset(name).name}.jsonl"
    items = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                if not isinstance(item, dict) or "id" not in item:
                    raise ValueError("not an object with an 'id'")
            except ValueError as e:
                raise PolylensError(f"{path}:{lineno}: malformed JSONL line ({e})") from None
            items.append(item)
    return tuple(items)


@cache
def dataset_sha256(name: str) -> str:
    """sha256 of the dataset's file: which version of the data a result came from."""
    return hashlib.sha256((DATA_DIR / f"{_dataset(name).name}.jsonl").read_bytes()).hexdigest()


def covered_langs(name: str) -> list[str]:
    """Languages every item of the dataset covers."""
    field = _dataset(name).per_language_field
    items = read_items(name)
    return [code for code in items[0][field] if all(code in it[field] for it in items)]


def split_of(item_id: str) -> str:
    """Deterministic split from a stable hash of the item id (the same in every language)."""
    bucket = int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < TEST_FRACTION else "train"


def load(name: str, langs: Sequence[str] | None = None, split: str | None = None) -> list:
    """Records of dataset ``name`` in ``langs`` (default: all it covers), item-major order."""
    dataset = _dataset(name)
    covered = covered_langs(name)
    for code in langs or []:
        if code in LANGUAGES and code not in covered:
            raise PolylensError(
                f"dataset {name!r} does not cover {code!r}; it covers {', '.join(covered)}"
            )
    langs = check_langs(list(langs) if langs is not None else None, covered)
    if split is not None and split not in SPLITS:
        raise PolylensError(f"unknown split {split!r}; use train, test or None for both")
    items = [it for it in read_items(name) if split is None or split_of(it["id"]) == split]
    return [dataset.make(item, lang) for item in items for lang in langs]


def prompts_of(records: Sequence) -> list[str]:
    """The text of each record (a word's main form, a fact's cloze, a question, a sentence)."""
    return [r.text for r in records]
