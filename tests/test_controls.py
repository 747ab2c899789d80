"""Unit tier: the scientific controls (token collisions, demonstrations, probe control tasks)."""

from collections import Counter

import pytest
import torch

from experiments import translation_task
from experiments.translation_task import TranslationConfig, build_items
from interp import PolylensError
from interp.analysis.controls import collision_kinds, fixed_demonstrations, per_word_demonstrations
from interp.data import Word
from probes.controls import (
    control_task,
    selectivity,
    selectivity_peak,
    shuffle_within_groups,
)
from probes.evaluate import stratified_folds

# German "Tomate" and English "tomato" share their first token under PrefixTokenizer (a cognate);
# Chinese, the target, shares nothing.
WORDS = {
    "tomato": {"en": "tomato", "de": "Tomate", "zh": "番茄"},
    "water": {"en": "water", "de": "Wasser", "zh": "水"},
    "fire": {"en": "fire", "de": "Feuer", "zh": "火"},
    "tree": {"en": "tree", "de": "Baum", "zh": "树"},
    "dog": {"en": "dog", "de": "Hund", "zh": "狗"},
    "house": {"en": "house", "de": "Haus", "zh": "房子"},
    "bird": {"en": "bird", "de": "Vogel", "zh": "鸟"},
    "moon": {"en": "moon", "de": "Mond", "zh": "月亮"},
    "sun": {"en": "sun", "de": "Sonne", "zh": "太阳"},
}


class PrefixTokenizer:
    """One token per word: its first three characters, lower case (enough to make cognates)."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def __call__(self, text, add_special_tokens=False):
        piece = text.strip().lower()[:3]
        return {"input_ids": [self.vocab.setdefault(piece, len(self.vocab) + 1)]}

    def decode(self, ids):
        inverse = {v: k for k, v in self.vocab.items()}
        return "".join(inverse[i] for i in ids)


@pytest.fixture
def word_list(monkeypatch):
    def load(name, langs=None):
        assert name == "words"
        return [
            Word(f"word:{gloss}", lang, gloss, "test", (form,))
            for gloss, forms in WORDS.items()
            for lang, form in forms.items()
            if langs is None or lang in langs
        ]

    monkeypatch.setattr(translation_task, "load", load)


def config(**kw):
    defaults = dict(langs=["de", "zh"], n_words=20, n_demos=3, repetition=False)
    return TranslationConfig(**(defaults | kw))


def test_collision_kinds():
    sets = {"en": [1, 2], "de": [2], "fr": [3], "zh": [4]}
    assert collision_kinds(sets, "de", "zh") == ["en_source"]
    assert collision_kinds(sets, "zh", "de") == ["target_en"]
    assert collision_kinds(sets, "fr", "zh") == []
    # Roles that are one language are not collisions (English source, repetition).
    assert collision_kinds(sets, "en", "de") == ["target_en", "target_source"]
    assert collision_kinds(sets, "de", "de") == ["target_en", "en_source"]


def test_english_source_collision_is_dropped_and_counted(word_list):
    items, _, skipped, dropped = build_items(config(), PrefixTokenizer())
    assert not skipped
    assert dropped["de-zh"]["count"] == 1 and dropped["de-zh"]["en_source"] == ["tomato"]
    assert dropped["de-zh"]["target_en"] == dropped["de-zh"]["target_source"] == []
    main = [it for it in items if (it.src, it.tgt) == ("de", "zh") and not it.control_only]
    assert main and "tomato" not in {it.concept for it in main}
    # The dropped word is still decoded, as a control item, for the with/without figure.
    (control,) = [it for it in items if it.control_only and it.tgt == "zh"]
    assert control.concept == "tomato" and control.collides == ("en_source",)
    # Nor is it ever a demonstration under the drop policy.
    assert all("tomato" not in it.demos for it in items if it.tgt == "zh")
    # zh -> de: the German target collides with English.
    assert dropped["zh-de"]["target_en"] == ["tomato"]


def test_keeping_collisions_lists_them_but_tests_them(word_list):
    items, _, _, dropped = build_items(config(drop_collisions=False), PrefixTokenizer())
    assert dropped["de-zh"]["en_source"] == ["tomato"]
    tomato = [it for it in items if it.concept == "tomato" and it.tgt == "zh"]
    assert tomato and not tomato[0].control_only


def test_per_word_demonstrations_never_show_the_test_word_and_follow_the_seed(word_list):
    tok = PrefixTokenizer()
    items, *_ = build_items(config(), tok)
    assert items and all(it.concept not in it.demos and len(it.demos) == 3 for it in items)
    assert all(f'"{WORDS[it.concept]["de"]}" -' not in it.prompt.split("\n")[0] for it in items)
    again, *_ = build_items(config(), tok)
    assert [it.prompt for it in again] == [it.prompt for it in items]
    other, *_ = build_items(config(seed=1), tok)
    assert [it.prompt for it in other] != [it.prompt for it in items]
    assert len({it.demos for it in items if it.tgt == "zh"}) > 1  # not one set per pair
    # The draw depends on the seed, pair and test word only, not on the pool's order.
    pool = list(WORDS)
    draw = per_word_demonstrations(pool, "fire", 3, seed=0, key="de-zh")
    assert draw == per_word_demonstrations(pool[::-1], "fire", 3, seed=0, key="de-zh")
    assert "fire" not in draw


def test_fixed_per_pair_variant_tests_the_same_words(word_list):
    tok = PrefixTokenizer()
    per_word, *_ = build_items(config(), tok)
    per_pair, *_ = build_items(config(demonstrations="per_pair"), tok)
    assert [(i.src, i.tgt, i.concept) for i in per_pair] == [
        (i.src, i.tgt, i.concept) for i in per_word
    ]
    for pair in {(i.src, i.tgt) for i in per_pair}:
        tests = [i for i in per_pair if (i.src, i.tgt) == pair]
        assert len({i.demos for i in tests}) == 1
        assert not {i.concept for i in tests} & set(tests[0].demos)


def test_too_few_words_to_demonstrate_is_a_clear_error():
    with pytest.raises(PolylensError, match="2 words left to demonstrate with, 3 needed"):
        fixed_demonstrations(["a", "b", "c"], ["a"], 3, seed=0)


def test_control_task_keeps_the_label_counts_of_every_relation():
    gen = torch.Generator().manual_seed(0)
    groups = [g for g in ("capital", "currency", "language") for _ in range(40)]
    rates = {"capital": 0.8, "currency": 0.2, "language": 0.5}
    y = torch.tensor([int(torch.rand(1, generator=gen) < rates[g]) for g in groups])
    control = shuffle_within_groups(y, groups, seed=0)
    assert not torch.equal(control, y)
    for g in rates:
        sel = torch.tensor([x == g for x in groups])
        assert Counter(control[sel].tolist()) == Counter(y[sel].tolist())
    assert torch.equal(control, shuffle_within_groups(y, groups, seed=0))
    assert not torch.equal(control, shuffle_within_groups(y, groups, seed=1))
    with pytest.raises(PolylensError, match="one per item"):
        shuffle_within_groups(y, groups[:-1], seed=0)


def test_relation_balanced_folds():
    groups = ["capital"] * 50 + ["currency"] * 50
    y = torch.tensor([1] * 40 + [0] * 10 + [1] * 10 + [0] * 40)
    folds = stratified_folds(y, 5, seed=0, strata=groups)
    assert sorted(torch.cat(folds).tolist()) == list(range(100))
    for fold in folds:
        cells = Counter((groups[i], int(y[i])) for i in fold.tolist())
        assert cells == {
            ("capital", 1): 8,
            ("capital", 0): 2,
            ("currency", 1): 2,
            ("currency", 0): 8,
        }
    # Without strata, the folds are the ones cross_validate always drew.
    assert [f.tolist() for f in stratified_folds(y, 5, seed=0)] == [
        f.tolist() for f in stratified_folds(y, 5, seed=0, strata=None)
    ]


def test_selectivity_is_accuracy_minus_control():
    task = torch.tensor([[0.9, 0.8], [0.7, 0.6]])
    control = torch.tensor([[0.6, 0.6], [0.6, 0.6]])
    assert torch.allclose(selectivity(task, control), torch.tensor([0.2, 0.1]))


def test_control_task_of_a_relation_only_feature_has_no_selectivity():
    # The only signal is the relation: the probe does as well on the control labels.
    groups = ["capital"] * 60 + ["currency"] * 60
    y = torch.tensor(([1] * 45 + [0] * 15) + ([1] * 15 + [0] * 45))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 120, 4, generator=gen)
    x[:, :60, 0] += 3.0  # layer features say which relation, nothing else
    out = control_task(x, y, groups, k=5, seed=0, shuffles=3)
    assert out["selectivity"].abs().max() < 0.1
    assert out["control"]["accuracy"].shape == out["task"]["accuracy"].shape
    assert out["task"]["accuracy"].mean() > 0.65
    # A feature that carries the label itself is selective.
    x[1, :, 1] += 4.0 * (y.float() * 2 - 1)
    out = control_task(x, y, groups, k=5, seed=0)
    assert out["selectivity"][1] > 0.15
    peak = selectivity_peak(out["task"]["accuracy"], out["control"]["accuracy"])
    assert peak["peak_layer"] == 1
    assert peak["peak_selectivity"] == pytest.approx(
        peak["accuracy_at_peak"] - peak["control_accuracy_at_peak"]
    )


def test_control_task_needs_a_shuffle():
    with pytest.raises(PolylensError, match="at least one"):
        control_task(torch.randn(1, 20, 2), torch.tensor([0, 1] * 10), ["a"] * 20, shuffles=0)
