"""Unit tier: languages whose templates tokenize to different numbers of post-instruction tokens.

A position is compared across languages by its offset from the prompt's end, and only where
every language has it: an index from the first post-instruction token means another token in
another language, or none (the crash of a zh, ja, th, hi run after all of it was computed).
"""

import csv
import json

import numpy as np
import pytest
import torch
from tiny import save_tiny, tiny_model

import experiments.refusal_direction as refusal_direction
from experiments import run_experiment
from experiments.base import ResultDir
from experiments.refusal_direction import RefusalConfig
from interp.analysis.direction_effects import cosine_by_layer, shared_position
from interp.analysis.directions import Selection, select_direction
from interp.analysis.refusal import incontext_template, post_instruction_count
from interp.errors import PolylensError

# de puts 10 tokens after the instruction, en 9 (on the tiny tokenizer); de runs first, so an
# index from the start that de selects can be past the end of en's.
LANGS = ["de", "en"]
HARMFUL = ["How do I hurt someone", "Write a threat", "Make a weapon", "Steal a car"]
HARMLESS = ["How do I bake bread", "Write a poem", "Make a cake", "Wash a car"]


def _write_user_data(directory, langs, n=8):
    directory.mkdir()
    for lang in langs:
        for kind, base in (("harmful", HARMFUL), ("harmless", HARMLESS)):
            items = [{"instruction": f"{base[i % 4]} {i}", "category": "x"} for i in range(n)]
            (directory / f"{kind}_{lang}.json").write_text(json.dumps(items), encoding="utf-8")
    return directory


def test_the_languages_post_instruction_counts_differ():
    """The premise of the tests below, on the tiny tokenizer."""
    model = tiny_model("llama")
    counts = [
        post_instruction_count(model, incontext_template(lang).wrap(HARMFUL + HARMLESS))
        for lang in LANGS
    ]
    assert len(set(counts)) == len(LANGS), counts


def test_shared_position_counts_offsets_every_language_has():
    # Most chosen -15 does not exist in the language with 9 positions: the next one that does.
    assert shared_position([-15, -15, -2], [20, 23, 9]) == -2
    assert shared_position([-1, -1, -3], [9, 20, 23]) == -1
    assert shared_position([-3, -2, -2, -3], [10, 10, 10, 10]) == -3  # a tie: the first chosen
    assert shared_position([-12, -15], [10, 20]) == -1  # none shared: the last token
    assert shared_position([-10], [10]) == -10
    with pytest.raises(ValueError, match="negative"):
        shared_position([3, -1], [9, 9])


def _forcing(offsets, layer, monkeypatch):
    """Make language i (in run order) select ``offsets[i]`` (from the end) at ``layer``."""
    queue = list(offsets)

    def select(scores, n_blocks, **kw):
        sel = select_direction(scores, n_blocks, **kw)
        reasons = np.where(sel.reasons == "selected", "kept", sel.reasons)
        pos = scores.bypass.shape[1] + queue.pop(0)
        reasons[layer, pos] = "selected"
        return Selection(layer, pos, reasons, sel.relaxed)

    monkeypatch.setattr(refusal_direction, "select_direction", select)


def _run(tmp_path, langs):
    overrides = {
        "model": str(save_tiny("llama", tmp_path / "tiny")),
        "langs": ",".join(langs),
        "data": str(_write_user_data(tmp_path / "data", langs)),
        "n_train": 8,
        "n_val": 2,
        "n_test": 2,
        "n_generate": 0,
        "layer_stride": 2,
        "prune_fraction": 0.0,
        "store": str(tmp_path / "store"),
        "out": str(tmp_path / "out"),
    }
    out = run_experiment("refusal-direction", None, overrides)
    return out, json.loads((out / "metrics.json").read_text())


def test_end_to_end_languages_are_compared_at_their_last_token(tmp_path, monkeypatch):
    """Both select their last token: index 9 of de, 8 of en (index 9 is past en's end)."""
    _forcing([-1, -1], 2, monkeypatch)
    out, metrics = _run(tmp_path, LANGS)
    per_lang = metrics["per_language"]
    assert [per_lang[lang]["n_post_instruction_tokens"] for lang in LANGS] == [10, 9]
    assert all(per_lang[lang]["selected_pos"].startswith("-1 ") for lang in LANGS)
    assert metrics["cosine_layer"] == 2 and metrics["cosine_position_index"] == -1
    assert metrics["cosine_position_tokens"] == {"de": "-1 ':'", "en": "-1 ':'"}
    # Each language's selected direction is its candidate at the compared position.
    cosines = {
        (r["layer"], r["a"], r["b"]): float(r["cosine"])
        for r in _csv(out / "tables" / "cosine_by_layer.csv")
    }
    assert cosines["2", "de", "en"] == pytest.approx(
        metrics["cosine_selected_directions"]["de-en"], abs=1e-6
    )
    assert "offset -1 from the prompt's end" in (out / "report.html").read_text()


def test_most_chosen_position_missing_in_one_language(tmp_path):
    """de selects its 10th token from the end twice (de, fr), which en (9 tokens) lacks: the
    languages are compared at en's choice, 2 from the end, in every language."""
    langs = ["de", "fr", "en"]
    n_post = {"de": 10, "fr": 10, "en": 9}
    g = torch.Generator().manual_seed(0)
    cands = {lang: torch.randn(4, n, 16, generator=g, dtype=torch.float64)
             for lang, n in n_post.items()}  # fmt: skip
    chosen = {"de": (1, 0), "fr": (1, 0), "en": (2, 7)}
    directions = {lang: cands[lang][layer, pos].float() for lang, (layer, pos) in chosen.items()}
    labels = {lang: [f"{p - n} 't{p}'" for p in range(n)] for lang, n in n_post.items()}
    config = RefusalConfig(langs=langs, out=str(tmp_path))
    out = ResultDir(refusal_direction.NAME, config)
    try:
        metrics = refusal_direction._across_languages(out, langs, cands, directions, chosen, labels)
        rows = _csv(out.path / "tables" / "cosine_by_layer.csv")
    finally:
        out.discard()
    assert metrics["cosine_position_index"] == -2 and metrics["cosine_layer"] == 1
    assert metrics["cosine_position_tokens"] == {"de": "-2 't8'", "fr": "-2 't8'", "en": "-2 't7'"}
    at = torch.stack([cands[lang][:, -2] for lang in langs])
    expected = cosine_by_layer(at)
    for r in rows:
        i, j = langs.index(r["a"]), langs.index(r["b"])
        assert float(r["cosine"]) == pytest.approx(float(expected[int(r["layer"]), i, j]))


def _csv(path):
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_layers_field_scores_those_layers_only(tmp_path):
    langs = ["en"]
    overrides = {
        "model": str(save_tiny("llama", tmp_path / "tiny")),
        "langs": "en",
        "data": str(_write_user_data(tmp_path / "data", langs)),
        "n_train": 8,
        "n_val": 2,
        "n_test": 2,
        "n_generate": 0,
        "layers": [3, 1],
        "prune_fraction": 0.0,
        "store": str(tmp_path / "store"),
        "out": str(tmp_path / "out"),
    }
    out = run_experiment("refusal-direction", None, overrides)
    rows = _csv(out / "tables" / "candidate_scores.csv")
    scored = {int(r["layer"]) for r in rows if r["bypass"] not in ("", "nan")}
    assert scored == {1, 3}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["per_language"]["en"]["selected_layer"] in (1, 3)
    with pytest.raises(PolylensError, match="config field layers: 9; give layers from 0 to"):
        run_experiment("refusal-direction", None, overrides | {"layers": [1, 9]})
