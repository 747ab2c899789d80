"""The few-shot word-translation task shared by latent-language and translation-barrier.

A prompt holds ``n_demos`` demonstrations and the test word, in the style of Wendler et al. 2024::

    Français: "eau" - 中文: "水"
    ...
    Français: "fleur" - 中文: "

Source == target gives the repetition task. The answer is read off the next token: a concept's
token set in a language is the first token of each surface variant of its forms there.

Controls (``interp.analysis.controls``): a word whose first tokens collide between target, English
and source is dropped from a pair by default, but the colliding words met while drawing the test
words are still decoded as control items (``Item.control_only``), so an experiment can draw its
curves with and without them. Demonstrations are drawn per test word by default (seeded by the word;
never the word itself); ``demonstrations: per_pair`` gives every test word of a pair the same set,
drawn from the words that are not tested. Both variants test the same words.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import torch

from experiments.base import ExperimentConfig
from experiments.fields import Range, above, at_least
from interp.analysis.controls import (
    COLLISION_KINDS,
    collision_kinds,
    fixed_demonstrations,
    per_word_demonstrations,
)
from interp.data import LANGUAGES, Word, load
from interp.data.loader import dataset_sha256
from interp.data.user import read_word_lists
from interp.errors import PolylensError
from interp.extract import extract
from interp.lens import LensOutput, apply_lens, first_tokens
from interp.model.footprint import Workload, forward_pass, held_vectors
from interp.model.models import LoadedModel
from interp.storage.store import ActivationStore

log = logging.getLogger(__name__)


@dataclass
class TranslationConfig(ExperimentConfig):
    """The translation task on top of the shared experiment fields."""

    words_dir: str | None = None
    """Directory of word lists as Wendler et al. publish them (llm-latent-language's
    ``data/langs``): ``<lang>/clean.csv`` per language, columns ``word_original`` (English) and
    ``word_translation``; default: the bundled ``words``."""
    n_words: int = 10
    """Test words per (source, target) pair."""
    n_demos: int = 4
    """Demonstrations per prompt (never the test word)."""
    repetition: bool = True
    """Also run source == target (the repetition task)."""
    drop_collisions: bool = True
    """Drop a word for a pair when first tokens collide between target and English, target and
    source, or English and source (cognates: p(English) would be the source word copied)."""
    demonstrations: Literal["per_word", "per_pair"] = "per_word"
    """per_word (a seeded draw for every test word) or per_pair (one fixed set per pair)."""
    lens: Literal["logit", "tuned"] = "logit"
    """logit or tuned."""
    top_k: int = 10
    """Top tokens kept per layer (translation-barrier's decoding criterion)."""
    memory_budget_mb: float = 512
    """Most memory the lens's vocabulary-sized intermediates may take at once."""
    bootstrap: int = 1000
    """Bootstrap resamples (over words) for the 95% intervals."""

    _ranges: ClassVar[dict[str, Range]] = {
        "n_words": at_least(1),
        "n_demos": at_least(1),
        "top_k": at_least(1),
        "memory_budget_mb": above(0),
        "bootstrap": at_least(1),
    }
    needs_next_token: ClassVar[str | None] = "the logit lens"


@dataclass(frozen=True)
class Item:
    """One test prompt."""

    concept: str
    src: str
    tgt: str
    prompt: str
    demos: tuple[str, ...] = ()
    """The concepts of its demonstrations, in prompt order."""
    collides: tuple[str, ...] = ()
    """The ``interp.analysis.controls.COLLISION_KINDS`` this concept has for the pair."""
    control_only: bool = False
    """Dropped by the collision policy; decoded only for the with/without control."""
    source_word: str = ""
    """The test word in the source language, as the prompt shows it."""
    target_word: str = ""
    """The expected answer: the main form of the word in the target language."""


@dataclass
class TaskRun:
    """Prompts, their lens readout and the bookkeeping of what was left out."""

    model: LoadedModel
    items: list[Item]
    lens: LensOutput
    set_langs: list[str]
    """Languages with a token set per item, in the order of ``lens.set_names``."""
    sets: list[dict[str, list[int]]]
    """Per item, the concept's first tokens in each ``set_langs`` language, ``any`` language and
    ``any_but_source``."""
    skipped_pairs: list[dict]
    dropped: dict[str, dict]
    """Per pair (``src-tgt`` keys), the words of the list that collide: ``count`` and the words
    per collision kind (dropped under ``drop_collisions``, kept and listed otherwise)."""
    words_source: str = "words"
    """Where the words came from: the bundled ``words`` (with its sha256) or the user's
    directory."""

    def select(self, keep: torch.Tensor) -> TaskRun:
        """The same run restricted to the items where the ``[item]`` mask ``keep`` holds."""
        idx = keep.nonzero().flatten()
        lens = LensOutput(
            self.lens.layers,
            self.lens.set_names,
            self.lens.set_logprobs[idx],
            self.lens.entropy[idx],
            self.lens.top_ids[idx],
            self.lens.top_logprobs[idx],
        )
        pick = idx.tolist()
        return replace(
            self, items=[self.items[i] for i in pick], lens=lens, sets=[self.sets[i] for i in pick]
        )

    def main(self) -> TaskRun:
        """The items the collision policy keeps (the control-only items left out)."""
        return self.select(torch.tensor([not it.control_only for it in self.items]))

    def probs_in(self, lang_of_item) -> torch.Tensor:
        """``[item, layer]`` probability of each item's concept in the language it picks."""
        col = {lang: i for i, lang in enumerate(self.set_langs)}
        p = self.lens.set_logprobs.exp()
        return torch.stack([p[i, :, col[lang_of_item(it)]] for i, it in enumerate(self.items)])

    def role_probs(self) -> dict[str, torch.Tensor]:
        """``[item, layer]`` probability of the concept in the target, English and source."""
        return {
            "target": self.probs_in(lambda it: it.tgt),
            "en": self.probs_in(lambda it: "en"),
            "source": self.probs_in(lambda it: it.src),
        }

    def final_correct(self) -> torch.Tensor:
        """Whether the last layer's top-1 token is a target first token, per item."""
        top1 = self.lens.top_ids[:, -1, 0].tolist()
        return torch.tensor(
            [t in self.sets[i][it.tgt] for i, (it, t) in enumerate(zip(self.items, top1))]
        )


def choices(config: TranslationConfig) -> str:
    """The collision policy and the demonstration scheme of a run, as a sentence for its report."""
    policy = (
        "dropped (target vs English, target vs source, English vs source)"
        if config.drop_collisions
        else "kept"
    )
    demos = (
        "drawn per test word (seeded, never the test word)"
        if config.demonstrations == "per_word"
        else "one fixed set per language pair"
    )
    return (
        f"This run: words with first-token collisions {policy}; {config.n_demos} "
        f"demonstrations {demos}."
    )


def _line(src: str, tgt: str, src_form: str, tgt_form: str | None) -> str:
    left = f'{LANGUAGES[src].endonym}: "{src_form}" - {LANGUAGES[tgt].endonym}: "'
    return left if tgt_form is None else f'{left}{tgt_form}"'


def _pair_tests(
    config: TranslationConfig, concepts: list[str], kinds: dict[str, list[str]], key: str
) -> tuple[list[str], list[str], list[str]]:
    """Test words, control-only words and the demonstration pool of one pair.

    The concepts are walked in a seeded order until ``n_words`` kept words are met; colliding
    words met on the way are the control items (dropped under ``drop_collisions``), so tests plus
    controls are a random sample of the whole list. At most ``len(pool) - n_demos`` words are
    tested, so that the fixed-per-pair variant has demonstrations left and tests the same words.
    """
    order = sorted(concepts)
    random.Random(f"{config.seed}:{key}").shuffle(order)
    pool = [c for c in order if not (config.drop_collisions and kinds[c])]
    n_tests = min(config.n_words, len(pool) - config.n_demos)
    tests, controls = [], []
    for concept in order:
        if len(tests) >= n_tests:
            break
        (controls if config.drop_collisions and kinds[concept] else tests).append(concept)
    return tests, controls, pool


def task_words(config: TranslationConfig) -> tuple[list[Word], str]:
    """The word records of the task's languages and English, and where they came from.

    The user's ``words_dir`` (Wendler et al.'s ``<lang>/clean.csv`` lists, read by
    ``interp.data.user.read_word_lists``) or the bundled ``words`` dataset.
    """
    set_langs = list(dict.fromkeys([*config.langs, "en"]))
    if config.words_dir is not None:
        return read_word_lists(config.words_dir, set_langs), str(config.words_dir)
    return load("words", langs=set_langs), f"words (sha256 {dataset_sha256('words')[:12]})"


def build_items(
    config: TranslationConfig, tokenizer, records: list[Word] | None = None
) -> tuple[list[Item], dict, list, dict]:
    """Prompts for every pair, the token sets of every concept, skipped pairs and collisions.

    ``records`` are the words (``task_words``'s, read when not given).
    """
    set_langs = list(dict.fromkeys([*config.langs, "en"]))
    if records is None:
        records = task_words(config)[0]
    words = {}
    for record in records:
        words.setdefault(record.gloss, {})[record.lang] = record.forms
    token_sets = {
        concept: {
            lang: sorted({t for f in forms[lang] for t in first_tokens(tokenizer, f)})
            for lang in set_langs
        }
        for concept, forms in words.items()
    }
    items, skipped, dropped = [], [], {}
    for src in config.langs:
        for tgt in config.langs:
            if src == tgt and not config.repetition:
                continue
            key = f"{src}-{tgt}"
            usable = [c for c, sets in token_sets.items() if sets[tgt]]
            kinds = {c: collision_kinds(token_sets[c], src, tgt) for c in usable}
            colliding = {k: sorted(c for c in usable if k in kinds[c]) for k in COLLISION_KINDS}
            dropped[key] = {"count": sum(bool(v) for v in kinds.values())} | colliding
            tests, controls, pool = _pair_tests(config, usable, kinds, key)
            if not tests:
                skipped.append(
                    {
                        "src": src,
                        "tgt": tgt,
                        "usable_words": len(pool),
                        "reason": "too few words whose tokens do not collide",
                    }
                )
                log.warning("skipping %s->%s: only %d usable words", src, tgt, len(pool))
                continue
            fixed = None
            if config.demonstrations == "per_pair":
                fixed = fixed_demonstrations(pool, tests, config.n_demos, seed=config.seed, key=key)
            for concept in tests + controls:
                demos = fixed or per_word_demonstrations(
                    pool, concept, config.n_demos, seed=config.seed, key=key
                )
                shots = [_line(src, tgt, words[c][src][0], words[c][tgt][0]) for c in demos]
                prompt = "\n".join([*shots, _line(src, tgt, words[concept][src][0], None)])
                items.append(
                    Item(
                        concept,
                        src,
                        tgt,
                        prompt,
                        tuple(demos),
                        tuple(kinds[concept]),
                        control_only=concept in controls,
                        source_word=words[concept][src][0],
                        target_word=words[concept][tgt][0],
                    )
                )
    return items, token_sets, skipped, dropped


def usable_items(
    config: TranslationConfig, tokenizer, records: list[Word], words_source: str
) -> tuple[list[Item], dict, list, dict]:
    """``build_items``, refused in one line when no pair has a test word."""
    items, token_sets, skipped, dropped = build_items(config, tokenizer, records)
    if not any(not it.control_only for it in items):
        raise PolylensError(
            f"no language pair has enough usable words in {words_source} (each pair needs "
            f"n_demos + 1 = {config.n_demos + 1} words); add languages or words, or lower n_demos"
        )
    return items, token_sets, skipped, dropped


def task_workload(config: TranslationConfig, model: LoadedModel) -> Workload:
    """Every layer at each prompt's last token, stored; the lens decodes the cached residuals.

    Exact for a cold store (a complete store entry is read back, not run). With the tuned lens,
    its training pass over the bundled parallel text is an upper bound: a cached lens runs none.
    """
    records, words_source = task_words(config)
    items = usable_items(config, model.tokenizer, records, words_source)[0]
    prompts = [it.prompt for it in items]
    readout = forward_pass(
        model, "residuals for the lens", prompts, batch_size=config.batch_size,
        stored=model.n_layers,
    )  # fmt: skip
    passes = [readout]
    held = len(prompts) * model.n_layers
    held += held_vectors(config.memory_budget_mb * 2**20, model.d_model)
    if config.lens == "tuned":
        from interp.lens.tuned import training_texts

        # training_residuals extracts every position of every text (extract's batch size)
        train = forward_pass(model, "tuned lens training (unless cached)", training_texts(),
                             batch_size=16)  # fmt: skip
        passes.append(train)
        held += sum(train.lengths) * model.n_layers
    return Workload(tuple(passes), held=held)


def run_task(config: TranslationConfig) -> TaskRun:
    """Build the prompts, extract every layer at the last token (store-cached), apply the lens."""
    records, words_source = task_words(config)  # the user's files are checked before the model
    model = config.load_model()
    items, token_sets, skipped, dropped = usable_items(
        config, model.tokenizer, records, words_source
    )
    acts = extract(
        model,
        [it.prompt for it in items],
        layers="all",
        positions="last",
        batch_size=config.batch_size,
        store=ActivationStore(config.store),
    )
    translators = None
    if config.lens == "tuned":
        from interp.lens.tuned import load_or_train_tuned_lens

        translators = load_or_train_tuned_lens(model)
    set_langs = list(next(iter(token_sets.values())))
    sets = []
    for it in items:
        by_lang = {lang: token_sets[it.concept][lang] for lang in set_langs}
        # The concept in whatever language, each token once (for decoding criteria); the source
        # word is in the prompt, so decoding it may be copying rather than translating.
        others = {t for lang, ids in by_lang.items() if lang != it.src for t in ids}
        sets.append(
            by_lang
            | {"any": sorted(others | set(by_lang[it.src])), "any_but_source": sorted(others)}
        )
    lens = apply_lens(
        model,
        acts,
        token_sets=sets,
        top_k=config.top_k,
        translators=translators,
        memory_budget_mb=config.memory_budget_mb,
        progress=True,
    )
    return TaskRun(model, items, lens, set_langs, sets, skipped, dropped, words_source)
