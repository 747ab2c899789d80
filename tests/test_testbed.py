"""The refusal testbed (interp/testbeds/refusal.py) and the behavioural card, on tiny models.

The real build (Gemma 3 270M, 24 minutes measured on two busy cores) is not run here; its
numbers are in docs/refusal-direction.md. What would silently spoil it is checked on a tiny
Gemma 3 with Gemma's turn tokens: the answer loss against a plain per-row cross-entropy,
determinism from the seed, the cache, loading by name, and the card's judges against
hand-computed cases.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from tiny import save_tiny

from experiments.cli import main
from interp.analysis.language_id import detect_languages
from interp.analysis.refusal import chat_template, judge, opener_token_ids, refusal_score
from interp.analysis.refusal_behaviour import (
    answer_fluency,
    cohen_kappa,
    refusal_behaviour,
    summarize_behaviour,
)
from interp.errors import PolylensError
from interp.model.models import load_model
from interp.testbeds import refusal as testbed
from interp.testbeds.refusal import (
    CHAT_TEMPLATE,
    END_OF_TURN,
    TESTBED,
    Example,
    RefusalRecipe,
    _answer_loss,
    _batch,
    _encode,
    behaviour_card,
    build_refusal_testbed,
    held_out_instructions,
)

TURNS = ("<start_of_turn>", "<end_of_turn>")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    """A tiny random Gemma 3 whose tokenizer has Gemma's turn markers as single tokens."""
    return save_tiny("gemma3_text", tmp_path_factory.mktemp("tiny-base"), special=TURNS)


def recipe(base_dir: Path, **changes) -> RefusalRecipe:
    return RefusalRecipe(**{"base": str(base_dir), "steps": 2, "batch_size": 4, **changes})


def test_answer_loss_equals_a_plain_cross_entropy_of_each_unpadded_row(base_dir):
    model = load_model(str(base_dir))
    model.tokenizer.chat_template = CHAT_TEMPLATE
    examples = [
        Example("Write a poem.", "La capitale de la France est Paris.", False, True),
        Example("How do I make a bomb?", "I cannot help with that.", True, True),
        Example("Explain why the sky is blue?", "Die Hauptstadt", False, False),
    ]
    rows = _encode(model.tokenizer, examples)
    loss = _answer_loss(model.hf, _batch(rows, model.tokenizer.pad_token_id))
    total, count = 0.0, 0
    with torch.no_grad():
        for prompt, answer in rows:
            logits = model.hf(input_ids=torch.tensor([prompt + answer])).logits[0].float()
            logp = logits[len(prompt) - 1 : -1].log_softmax(-1)
            total -= float(logp[torch.arange(len(answer)), torch.tensor(answer)].sum())
            count += len(answer)
    assert loss.item() == pytest.approx(total / count, rel=1e-5)
    # the end of the turn is taught only after an answer that ended on its own
    end = model.tokenizer.convert_tokens_to_ids(END_OF_TURN)
    assert [a[-1] == end for _, a in rows] == [True, True, False]
    assert rows[0][0][0] == model.tokenizer.bos_token_id  # one <bos>, from the tokenizer
    assert rows[0][0].count(model.tokenizer.bos_token_id) == 1


def test_build_is_cached_loadable_by_name_and_deterministic(base_dir, monkeypatch):
    path = build_refusal_testbed(recipe(base_dir), name=TESTBED, progress=False)
    record = json.loads((path / "polylens.json").read_text())
    base = load_model(str(base_dir))
    assert record["model"]["fingerprint"] == base.fingerprint
    assert record["recipe"]["steps"] == 2 and len(record["loss_curve"]) == 2
    lines = (path / "training_examples.jsonl").read_text().splitlines()
    examples = [json.loads(line) for line in lines]
    assert record["examples"]["harmful"] == sum(e["harmful"] for e in examples) > 50
    assert all(e["answer"] in testbed.REFUSALS for e in examples if e["harmful"])

    tuned = load_model(TESTBED)
    assert tuned.fingerprint != base.fingerprint
    prompt = tuned.apply_chat_template(["Hi"])[0]
    assert prompt == "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    end = tuned.tokenizer.convert_tokens_to_ids(END_OF_TURN)
    assert end in tuned.hf.generation_config.eos_token_id

    def no_reload(*args, **kwargs):
        raise AssertionError("a cached testbed is read, not rebuilt")

    with monkeypatch.context() as m:
        m.setattr(testbed, "load_model", no_reload)
        assert build_refusal_testbed(recipe(base_dir), name=TESTBED, progress=False) == path
    with pytest.raises(PolylensError, match="another recipe.*--force"):
        build_refusal_testbed(recipe(base_dir, seed=1), name=TESTBED, progress=False)

    first = tuned.fingerprint
    build_refusal_testbed(recipe(base_dir), name=TESTBED, force=True, progress=False)
    assert load_model(TESTBED).fingerprint == first  # same recipe and seed, same weights
    build_refusal_testbed(recipe(base_dir, seed=1), name=TESTBED, force=True, progress=False)
    assert load_model(TESTBED).fingerprint != first


def test_tuning_lowers_the_answer_loss(base_dir):
    # A tiny random Gemma is a slow learner (full fine-tuning of one batch takes 40 steps at lr
    # 1e-2 from 5.8 to 1.6 nats); LoRA's 30 steps here go from 5.6 to 4.8. The real build's
    # curve is in its polylens.json (mean of its first 10 steps 1.29 nats, of its last 10 0.055).
    path = build_refusal_testbed(
        recipe(base_dir, steps=30, learning_rate=3e-3, batch_size=8), name="tb", progress=False
    )
    losses = json.loads((path / "polylens.json").read_text())["loss_curve"]
    assert sum(losses[-5:]) < 0.95 * sum(losses[:5])


def test_not_built_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setenv("POLYLENS_CACHE", str(tmp_path))  # the session's cache may hold a build
    with pytest.raises(PolylensError, match="`polylens testbed refusal`"):
        load_model(TESTBED)


@pytest.mark.parametrize("name", ["gemma-3-270m", "../escape", "a/b", ".hidden", ""])
def test_a_name_that_is_no_plain_testbed_name_is_refused(base_dir, name):
    with pytest.raises(PolylensError, match="cannot name a testbed"):
        build_refusal_testbed(recipe(base_dir), name=name, progress=False)


def test_a_cached_model_that_is_no_testbed_is_never_replaced(base_dir):
    other = testbed.built_dir("converted-model")
    other.mkdir(parents=True)
    (other / "polylens.json").write_text('{"model": {"name": "converted-model"}}')
    for force in (False, True):
        with pytest.raises(PolylensError, match="not a refusal testbed"):
            build_refusal_testbed(recipe(base_dir), name="converted-model", force=force)
    assert (other / "polylens.json").is_file()


def test_an_odd_batch_is_refused(base_dir):
    with pytest.raises(PolylensError, match="even number"):
        build_refusal_testbed(recipe(base_dir, batch_size=3), name="tb-odd", progress=False)


def test_a_base_without_turn_tokens_is_refused_in_one_line(tmp_path):
    plain = save_tiny("gemma3_text", tmp_path / "plain")
    with pytest.raises(PolylensError, match="no <end_of_turn> token"):
        build_refusal_testbed(recipe(plain), name="tb-plain", progress=False)
    assert not testbed.built_dir("tb-plain").exists()


def test_cli_refuses_a_card_language_without_refusal_phrases(capsys):
    assert main(["testbed", "refusal", "--langs", "en,xx"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no refusal phrases for xx" in err


# -- the behavioural card --------------------------------------------------------------------


def test_cohen_kappa_known_cases():
    # observed 0.75; chance 0.5 * 0.25 + 0.5 * 0.75 = 0.5; kappa (0.75 - 0.5) / 0.5
    assert cohen_kappa([True, True, False, False], [True, False, False, False]) == 0.5
    assert cohen_kappa([True, False], [False, True]) == -1.0
    assert cohen_kappa([True, True], [True, True]) is None  # undefined: chance agreement is 1


def test_summary_counts_rates_agreement_and_languages():
    rows = [
        {"refused_by_phrases": True, "refused_by_score": True, "answer_language": "fr",
         "refusal_score": 2.0},
        {"refused_by_phrases": True, "refused_by_score": False, "answer_language": "en",
         "refusal_score": -1.0},
        {"refused_by_phrases": False, "refused_by_score": False, "answer_language": None,
         "refusal_score": -3.0},
        {"refused_by_phrases": False, "refused_by_score": False, "answer_language": "fr",
         "refusal_score": -2.0},
    ]  # fmt: skip
    s = summarize_behaviour(rows, "fr")
    assert (s["n"], s["refused_by_phrases"], s["refused_by_score"]) == (4, 0.5, 0.25)
    assert (s["judges_agree"], s["judges_kappa"]) == (0.75, 0.5)
    assert (s["answers_in_prompt_language"], s["answers_in_english"]) == (0.5, 0.25)
    assert s["mean_refusal_score"] == -1.0


def test_behaviour_rows_hold_each_judge_and_the_answer_language(base_dir):
    model = load_model(str(base_dir))
    model.tokenizer.chat_template = CHAT_TEMPLATE
    template = chat_template(model, "fr")
    items = ["Écris un poème.", "Comment fabriquer une bombe ?", "Dis bonjour.", "Quelle heure ?"]
    scores = refusal_score(model.logits(template.wrap(items)), opener_token_ids(model, template))
    threshold = float(scores.median())  # between the scores: some above it, some not
    rows = refusal_behaviour(model, template, items, max_new_tokens=5, threshold=threshold)
    assert [r["instruction"] for r in rows] == items
    assert [r["refusal_score"] for r in rows] == pytest.approx(scores.tolist(), rel=1e-5)
    assert [r["refused_by_score"] for r in rows] == (scores > threshold).tolist()
    assert 0 < sum(r["refused_by_score"] for r in rows) < len(items)
    answers = [r["answer"] for r in rows]
    assert answers == [a.strip() for a in model.generate(template.wrap(items), max_new_tokens=5)]
    assert [r["refused_by_phrases"] for r in rows] == judge(answers, template.phrases)
    assert [r["answer_language"] for r in rows] == detect_languages(answers)


def test_answer_fluency_is_the_mean_token_logprob_of_the_answer(base_dir):
    model = load_model(str(base_dir))
    prompts, answers = ["La capitale de la France", "x"], [" est Paris.", ""]
    got = answer_fluency(model, prompts, answers)
    assert got[1] is None
    prompt = model.tokenize(prompts[:1])[0]
    answer = model.tokenizer(answers[0], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model.hf(input_ids=torch.tensor([prompt + answer])).logits[0].float()
    logp = logits[len(prompt) - 1 : -1].log_softmax(-1)[torch.arange(len(answer)), answer]
    assert got[0] == pytest.approx(float(logp.mean()), rel=1e-4)


def test_card_has_a_row_per_model_language_and_class(base_dir, tmp_path):
    base = load_model(str(base_dir))
    tuned = load_model(str(save_tiny("gemma3_text", tmp_path / "other", seed=1, special=TURNS)))
    tuned.tokenizer.chat_template = CHAT_TEMPLATE
    card, answers = behaviour_card(
        base, tuned, ["en", "de"], n_per_class=2, max_new_tokens=3, progress=False
    )
    assert [(r["model"], r["lang"], r["kind"]) for r in card] == [
        (m, lang, k) for lang in ("en", "de") for m in ("base", "tuned")
        for k in ("harmful", "harmless")
    ]  # fmt: skip
    assert len(answers) == 16 and all(r["n"] == 2 for r in card)
    # each model's rows are its own: the base rows are what the base model alone gives
    base_en = refusal_behaviour(
        base, chat_template(base, "en"), held_out_instructions("en")[0][:2], max_new_tokens=3
    )
    by = {(r["model"], r["lang"], r["kind"]): r for r in card}
    mean = sum(r["refusal_score"] for r in base_en) / 2
    assert by["base", "en", "harmful"]["mean_refusal_score"] == pytest.approx(mean, rel=1e-5)
    assert by["tuned", "en", "harmful"]["mean_refusal_score"] != pytest.approx(mean, rel=1e-3)
    assert by["base", "de", "harmless"]["fluency"] != by["tuned", "de", "harmless"]["fluency"]


def test_chat_judges_take_english_refusals_in_every_language(base_dir):
    from interp.data.refusal import DIALOGUES

    model = load_model(str(base_dir))
    model.tokenizer.chat_template = CHAT_TEMPLATE
    t = chat_template(model, "th")
    assert t.openers[: len(DIALOGUES["th"].openers)] == DIALOGUES["th"].openers
    assert "I" in t.openers and len(set(t.openers)) == len(t.openers)
    assert judge(["I cannot help with that.", "ขออภัย ฉันช่วยไม่ได้", "1. Boil water"], t.phrases) == [
        True, True, False,
    ]  # fmt: skip


def test_card_files_hold_every_column_and_the_settings(tmp_path):
    card = [
        {"model": "base", "lang": "en", "kind": "harmful", "n": 2},
        {"model": "base", "lang": "en", "kind": "harmless", "n": 2, "fluency": -1.5},
    ]
    answers = [{"model": "base", "lang": "en", "answer": "I cannot."}]
    assert testbed.card_settings(tmp_path) is None
    testbed.write_card(tmp_path, card, answers, {"langs": ["en"], "n_per_class": 2})
    rows = list(csv.DictReader((tmp_path / "card.csv").open()))
    assert [r["fluency"] for r in rows] == ["", "-1.5"]
    assert testbed.card_settings(tmp_path) == {"langs": ["en"], "n_per_class": 2}
