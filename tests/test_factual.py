"""Unit tier (tiny random models) and one integration test: factual recall and consistency."""

import csv
import json

import pytest
import torch
from tiny import CONFIGS, save_tiny, tiny_model
from tolerance import SAME_MATH, VOCAB_SOFTMAX, assert_close_to_scale

from experiments import run_experiment
from interp.analysis.consistency import (
    language_of_inquiry,
    overlap_consistency,
    pair_summary,
    rank_consistency,
    transfer_scores,
)
from interp.analysis.fact_files import read_polylens_tsv_dir
from interp.analysis.factual import (
    FactPrompt,
    answer_matches,
    candidate_logprobs,
    continuation,
    rank_candidates,
)
from interp.analysis.factual_data import bundled_facts, country_languages, with_demonstrations
from interp.analysis.factual_lens import answer_token_sets, takeover_layer
from interp.analysis.language_id import detect_languages
from interp.errors import PolylensError
from interp.interventions import Add, intervene

PROMPTS = ["The capital of France is", "法国的首都是", "Mji mkuu wa Ufaransa ni", "x"]
CANDIDATES = [
    [" Paris", " Paris na Berlin", " London", " Die Hauptstadt"],
    ["巴黎", "巴黎。", "x"],
    [" Paris.", " Ufaransa"],
    [" capital of France is Paris"],
]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def model(request):
    return tiny_model(request.param)


def direct_logprob(model, prompt: str, cand: str) -> torch.Tensor:
    """Sum of the candidate's token log-probs from one full forward of prompt + candidate."""
    p = model.tokenize([prompt])[0]
    c = model.tokenizer(cand, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + c], device=model.device)
    with torch.inference_mode():
        logits = model.hf(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(logp[len(p) - 1 + j, t] for j, t in enumerate(c)).cpu()


def expected(model):
    return [
        torch.stack([direct_logprob(model, p, c) for c in cands])
        for p, cands in zip(PROMPTS, CANDIDATES)
    ]


def test_multi_token_candidates_equal_a_full_forward_sum(model):
    ref = expected(model)
    assert any(len(model.tokenizer(c)["input_ids"]) > 2 for c in CANDIDATES[0])
    for batch_size in (1, 3, 16):
        got = candidate_logprobs(model, PROMPTS, CANDIDATES, batch_size=batch_size)
        for g, r in zip(got, ref):
            assert_close_to_scale(g, r, SAME_MATH)


def test_small_memory_budget_chunks_candidates_to_the_same_scores(llama):
    ref = candidate_logprobs(llama, PROMPTS, CANDIDATES)
    got = candidate_logprobs(llama, PROMPTS, CANDIDATES, memory_budget_mb=1e-3)
    for g, r in zip(got, ref):
        assert_close_to_scale(g, r, SAME_MATH)


def test_scoring_runs_under_edits(llama):
    shift = torch.randn(llama.d_model, generator=torch.Generator().manual_seed(1))
    plain = candidate_logprobs(llama, PROMPTS[:1], CANDIDATES[:1])[0]
    with intervene(llama, {"resid_post.0": Add(shift, coeff=5.0)}):
        edited = candidate_logprobs(llama, PROMPTS[:1], CANDIDATES[:1])[0]
        # the edit applies at every position of both passes: a full forward agrees
        direct = torch.stack([direct_logprob(llama, PROMPTS[0], c) for c in CANDIDATES[0]])
    assert_close_to_scale(edited, direct, SAME_MATH)
    assert (edited - plain).abs().max() > 1e-3


def test_rank_candidates_orders_by_logprob(llama):
    en = "The capital of France is"
    facts = [
        FactPrompt("f1", "en", "capital", en, "Paris", (), ("London", "Paris", "Berlin")),
        FactPrompt("f1", "zh", "capital", "法国的首都是", "巴黎", (), ("巴黎", "伦敦")),
        FactPrompt("f2", "en", "capital", "x", "Paris", (), ("Paris",)),
    ]
    ranking = rank_candidates(llama, facts, batch_size=2)
    for i, f in enumerate(facts):
        lp = torch.stack(
            [
                direct_logprob(llama, f.prompt, continuation(f.prompt, c, f.lang))
                for c in f.candidates
            ]
        )
        assert_close_to_scale(ranking.logprobs[i], lp, SAME_MATH)
        order = [f.candidates[j] for j in lp.argsort(descending=True)]
        assert list(ranking.ranking[i]) == order
        gold = f.candidates.index(f.answer)
        assert ranking.gold_rank[i] == int((lp > lp[gold]).sum())
        assert bool(ranking.correct[i]) == (order[0] == f.answer)
        assert bool(ranking.margin[i] > 0) == bool(ranking.correct[i])
    assert ranking.best_wrong[2] is None and ranking.best_wrong_logprob[2] == -torch.inf
    assert ranking.best_wrong[0] == max(
        ("London", "Berlin"), key=lambda c: float(ranking.logprobs[0][facts[0].candidates.index(c)])
    )  # fmt: skip


def test_continuation_spacing():
    assert continuation("The capital of France is", "Paris", "en") == " Paris"
    assert continuation("法国的首都是", "巴黎", "zh") == "巴黎"
    assert continuation("La capitale est ", "Paris", "fr") == "Paris"


def test_scoring_input_errors(llama):
    with pytest.raises(PolylensError, match="no candidates"):
        candidate_logprobs(llama, ["a"], [[]])
    with pytest.raises(PolylensError, match="has no tokens"):
        candidate_logprobs(llama, ["a"], [[""]])
    with pytest.raises(PolylensError, match="prompts but candidates"):
        candidate_logprobs(llama, ["a", "b"], [[" x"]])
    with pytest.raises(PolylensError, match="not among"):
        FactPrompt("f", "en", "r", "p", "gold", (), ("other",))


@pytest.mark.integration
def test_gemma_candidate_scores_equal_a_full_forward(gemma):
    prompts, cands = (
        ["The capital of France is", "日本の首都は"],
        [[" Paris", " Buenos Aires"], ["東京", "ロンドン"]],
    )
    got = candidate_logprobs(gemma, prompts, cands)
    for p, cs, g in zip(prompts, cands, got):
        assert_close_to_scale(
            g, torch.stack([direct_logprob(gemma, p, c) for c in cs]), VOCAB_SOFTMAX
        )
    assert got[0][0] > got[0][1]


# -- facts, demonstrations, user TSV ---------------------------------------------------------
def test_bundled_facts_are_parallel_across_languages():
    facts = bundled_facts(["en", "fr", "ja"], n_per_relation=3, max_candidates=5, seed=0)
    assert {f.relation for f in facts} == {"capital", "currency", "language", "continent"}
    by_id = {}
    for f in facts:
        assert f.answer in f.candidates and 2 <= len(f.candidates) <= 5
        by_id.setdefault(f.fact_id, {})[f.lang] = f
    assert len(by_id) == 12 and all(len(v) == 3 for v in by_id.values())
    for per in by_id.values():
        keys = {f.keys for f in per.values()}
        assert len(keys) == 1  # the same candidate concepts, in the same order, in every language
        gold = {f.keys[f.candidates.index(f.answer)] for f in per.values()}
        assert len(gold) == 1
    again = bundled_facts(["en", "fr", "ja"], n_per_relation=3, max_candidates=5, seed=0)
    assert again == facts


def test_demonstrations_never_show_the_fact_and_match_across_languages():
    facts = bundled_facts(["en", "zh"], n_per_relation=4, max_candidates=4, seed=1)
    shots = with_demonstrations(facts, 2, seed=1)
    for plain, f in zip(facts, shots):
        lines = f.prompt.split("\n")
        assert len(lines) == 3 and lines[-1] == plain.prompt
        assert all(plain.answer not in line for line in lines[:2]) or plain.relation in (
            "continent",
            "currency",
            "language",
        )  # shared objects (Europe, euro) may recur; capitals are unique
    en = {f.fact_id: f.prompt.count("\n") for f in shots if f.lang == "en"}
    assert set(en.values()) == {2}
    with pytest.raises(PolylensError, match="demonstrations"):
        with_demonstrations(facts, 4, seed=1)  # 4 facts per relation: only 3 others


def write_tsv(directory, lang, rows, header="id\trelation\tprompt\tanswer\tcandidates"):
    (directory / f"{lang}.tsv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")


def test_mlama_dir_reads_aligned_facts(tmp_path):
    write_tsv(tmp_path, "en", ["a\tcapital\tThe capital of France is <mask>.\tParis\tParis|Rome"])
    write_tsv(tmp_path, "zh", ["a\tcapital\t法国的首都是<mask>。\t巴黎\t罗马|巴黎"])
    facts = read_polylens_tsv_dir(tmp_path, ["en", "zh"])
    assert [f.prompt for f in facts] == ["The capital of France is", "法国的首都是"]
    assert facts[0].candidates == ("Paris", "Rome") and facts[0].keys == ("a#0", "a#1")


@pytest.mark.parametrize(
    "en_rows,fr_rows,header,message",
    [
        (["a\tr\tX <mask>\tb\tb|c"], ["z\tr\tX <mask>\tb\tb|c"], None, "has id 'z' but"),
        (["a\tr\tX is\tb\tb|c"], ["a\tr\tX <mask>\tb\tb|c"], None, "has no <mask>"),
        (["a\tr\tX <mask>\tb"], ["a\tr\tX <mask>\tb"], "id\trelation\tprompt\tanswer",
         "lacks the column 'candidates'"),
        (["a\tr\tX <mask>\tb\tc|d"], ["a\tr\tX <mask>\tb\tb|c"], None, "not among its candidates"),
        (["a\tr\tX <mask>\tb\tb|c"], ["a\tr\tX <mask>\tb\tb|c|d"], None, "has 3 candidates"),
        (["a\tr\tX <mask>\tb\tb|c", "e\tr\tY <mask>\tb\tb|c"], ["a\tr\tX <mask>\tb\tb|c"], None,
         "has 1 rows but"),
        ([], ["a\tr\tX <mask>\tb\tb|c"], "", "is empty"),
    ],
)  # fmt: skip
def test_mlama_errors_are_one_line(tmp_path, en_rows, fr_rows, header, message):
    if header is None:
        write_tsv(tmp_path, "en", en_rows)
    else:
        write_tsv(tmp_path, "en", en_rows, header=header) if header else (
            tmp_path / "en.tsv"
        ).write_text("", encoding="utf-8")
    write_tsv(tmp_path, "fr", fr_rows)
    with pytest.raises(PolylensError, match=message) as err:
        read_polylens_tsv_dir(tmp_path, ["en", "fr"])
    assert "\n" not in str(err.value)


def test_mlama_missing_language_file(tmp_path):
    write_tsv(tmp_path, "en", ["a\tr\tX <mask>\tb\tb|c"])
    with pytest.raises(PolylensError, match="no file fr.tsv"):
        read_polylens_tsv_dir(tmp_path, ["en", "fr"])
    with pytest.raises(PolylensError, match="does not exist"):
        read_polylens_tsv_dir(tmp_path / "nowhere", ["en"])


# -- consistency and language of inquiry on constructed outcomes ------------------------------
def test_overlap_consistency_on_constructed_sets():
    # en right on f1 f2 f3; fr right on f2 f3 f4; zh right on nothing.
    right = {"en": {"f1", "f2", "f3"}, "fr": {"f2", "f3", "f4"}, "zh": set()}
    outcomes = {(f, lang): f in right[lang] for lang in right for f in ("f1", "f2", "f3", "f4")}
    m = overlap_consistency(outcomes, ["en", "fr", "zh"])
    assert m[0, 1] == pytest.approx(2 / 4) and m[1, 0] == pytest.approx(2 / 4)
    assert m[0, 0] == 1 and m[0, 2] == 0  # zh shares none of en's three
    outcomes_nothing = {(f, lang): False for lang in ("a", "b") for f in ("f1",)}
    assert torch.isnan(overlap_consistency(outcomes_nothing, ["a", "b"])[0, 1])
    summary = pair_summary(m, ["en", "fr", "zh"])
    assert summary["mean"] == pytest.approx((0.5 + 0 + 0) / 3)
    assert (summary["max"], summary["max_pair"]) == (0.5, "en-fr")


def test_rank_consistency_on_constructed_rankings():
    rankings = {
        ("f1", "en"): ("a", "b", "c", "d"),
        ("f1", "fr"): ("b", "a", "d", "c"),  # top-2 the same set, top-1 differs
        ("f2", "en"): ("x", "y"),
        ("f2", "fr"): ("y", "x"),
    }
    top1 = rank_consistency(rankings, ["en", "fr"], k=1)
    assert top1[0, 1] == 0 and top1[0, 0] == 1
    top2 = rank_consistency(rankings, ["en", "fr"], k=2)
    assert top2[0, 1] == pytest.approx(1.0)  # f1: {a,b} = {b,a}; f2: k capped at 2, all shared
    top3 = rank_consistency(rankings, ["en", "fr"], k=3)
    assert top3[0, 1] == pytest.approx((2 / 3 + 1) / 2)


def test_language_of_inquiry_on_constructed_outcomes():
    # f1, f2 are about a French-speaking country, f3 about a Japanese-speaking one.
    fact_language = {"f1": "fr", "f2": "fr", "f3": "ja"}
    outcomes = {
        ("f1", "fr"): True, ("f1", "en"): False, ("f1", "ja"): True,
        ("f2", "fr"): True, ("f2", "en"): False, ("f2", "ja"): False,
        ("f3", "fr"): True, ("f3", "en"): True, ("f3", "ja"): False,
    }  # fmt: skip
    rows = {r["lang"]: r for r in language_of_inquiry(
        outcomes, fact_language, ["en", "fr", "ja"], n_boot=200, seed=0
    )}  # fmt: skip
    assert set(rows) == {"fr", "ja", "all"}  # no fact is about an English-speaking country
    fr = rows["fr"]
    assert (fr["n_facts"], fr["native"], fr["foreign"]) == (2, 1.0, 0.25)
    assert fr["effect"] == pytest.approx(0.75)
    assert fr["ci_low"] <= 0.75 <= fr["ci_high"]
    assert rows["ja"]["effect"] == pytest.approx(-1.0)
    assert rows["all"]["effect"] == pytest.approx((0.75 + 0.75 - 1.0) / 3)
    t = transfer_scores(1.0, 0.25)
    assert (t["FRS"], t["KTS"]) == (0.625, 0.25)
    assert t["X-FaKT"] == pytest.approx(2 * 0.625 * 0.25 / 0.875)


def test_country_languages_map_the_bundled_countries():
    langs = country_languages()
    assert langs["capital:FR"] == "fr" and langs["currency:JP"] == "ja"
    assert langs["language:SA"] == "ar" and "capital:CN" not in langs  # zh: no such country


def test_takeover_layer():
    own = torch.tensor([0.0, 0.3, 0.1, 0.4, 0.5])
    other = torch.tensor([0.1, 0.2, 0.2, 0.2, 0.1])
    assert takeover_layer(own, other, [0, 1, 2, 3, 4]) == 3  # ahead at 1 but not for good
    assert takeover_layer(other, own, [0, 1, 2, 3, 4]) is None


def test_answer_token_sets_leave_shared_tokens_to_the_prompt_language(llama):
    facts = [
        FactPrompt("c", "en", "capital", "p", "Paris", (), ("Paris", "Rome")),
        FactPrompt("c", "fr", "capital", "p", "Paris", (), ("Paris", "Rome")),
        FactPrompt("c", "zh", "capital", "p", "巴黎", (), ("巴黎", "罗马")),
    ]
    sets = answer_token_sets(llama.tokenizer, facts)
    assert sets[0]["en"] == [] and not set(sets[1]["own"]) & set(sets[1]["other"])
    assert set(sets[2]["other"]) >= set(sets[0]["own"]) - set(sets[2]["own"])


def test_generation_match_rule():
    assert answer_matches("  paris, of course", ["Paris"])
    assert answer_matches("EUR 5", ["Euro", "EUR"])
    assert not answer_matches("The city of Paris", ["Paris"])


# -- the experiment, end to end on a tiny model -----------------------------------------------
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(save_tiny("gemma3_text", tmp_path_factory.mktemp("tiny-gemma")))


def test_factual_consistency_end_to_end(tiny_dir, tmp_path):
    overrides = {"model": tiny_dir, "langs": "en,fr,ar", "out": str(tmp_path)}
    overrides |= {"n_per_relation": 4, "max_candidates": 4, "bootstrap": 50, "max_new_tokens": 3}
    path = run_experiment("factual-consistency", None, overrides)
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["n_facts"] == 16 and metrics["n_prompts"] == 48
    per_fact = list(csv.DictReader(open(path / "tables" / "per_fact.csv", encoding="utf-8")))
    rank_ok = [r["gold_rank"] == "0" for r in per_fact]
    assert metrics["accuracy_rank"] == pytest.approx(sum(rank_ok) / len(rank_ok))
    assert metrics["accuracy_counterfactual"] == pytest.approx(metrics["accuracy_rank"])
    for r in per_fact:
        assert (float(r["margin"]) > 0) == (r["gold_rank"] == "0")
    found = detect_languages([r["generated"] for r in per_fact])  # None is a blank CSV cell
    assert [r["answer_language"] for r in per_fact] == [code or "" for code in found]
    cons = list(csv.DictReader(open(path / "tables" / "consistency.csv", encoding="utf-8")))
    assert {r["metric"] for r in cons} == {"overlap", "top3"}
    inquiry = list(csv.DictReader(open(path / "tables" / "language_of_inquiry_rank.csv")))
    assert inquiry[-1]["lang"] == "all" and {r["lang"] for r in inquiry} <= {
        "en",
        "fr",
        "ar",
        "all",
    }
    transition = list(csv.DictReader(open(path / "tables" / "language_transition.csv")))
    assert len(transition) == 4 * 4  # groups all, en, fr, ar x 4 layers of a 3-block model
    for name in (
        "accuracy_rank",
        "overlap_consistency",
        "language_of_inquiry",
        "language_transition",
    ):
        assert (path / "figures" / f"{name}.png").is_file()
    assert "NaN" not in (path / "metrics.json").read_text()
    assert "candidate-frequency" in (path / "report.html").read_text()


def test_factual_consistency_on_user_tsv(tiny_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = {
        "en": ["f{i}\tcapital\tThe capital of C{i} is <mask>.\tX{i}\tX{i}|Y{i}|Z{i}"],
        "fr": ["f{i}\tcapital\tLa capitale de C{i} est <mask>.\tX{i}\tX{i}|Y{i}|Z{i}"],
    }
    for lang, (pattern,) in rows.items():
        write_tsv(data, lang, [pattern.format(i=i) for i in range(5)])
    overrides = {"model": tiny_dir, "langs": "en,fr", "out": str(tmp_path), "data": str(data)}
    overrides |= {"n_demos": 2, "bootstrap": 20, "transition": False, "max_new_tokens": 2}
    path = run_experiment("factual-consistency", None, overrides)
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["n_facts"] == 5 and metrics["language_of_inquiry"] == {}


def test_factual_config_errors(tmp_path):
    with pytest.raises(PolylensError, match="two languages"):
        run_experiment("factual-consistency", None, {"langs": "en", "out": str(tmp_path)})
    with pytest.raises(PolylensError, match="unknown relation"):
        bundled_facts(["en"], n_per_relation=2, max_candidates=3, seed=0, relations=["height"])


def test_bench_factual_ranks_agree(tiny_dir, tmp_path):
    from experiments.cli import main

    out = tmp_path / "b.json"
    argv = ["bench", "factual", "--model", tiny_dir, "--n-facts", "4", "--langs", "en,zh"]
    assert main([*argv, "--max-candidates", "4", "--batch-size", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n_prompts"] == 8 and result["same_gold_ranks"] and result["same_top1"]
    assert set(result["median_s"]) == {"naive", "batched"}
