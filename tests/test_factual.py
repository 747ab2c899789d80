"""Unit tier (tiny random models) and one integration test: factual recall and consistency."""

import pytest
import torch
from tiny import CONFIGS, tiny_model
from tolerance import SAME_MATH, VOCAB_SOFTMAX, assert_close_to_scale

from interp.errors import PolylensError
from interp.factual import FactPrompt, candidate_logprobs, continuation, rank_candidates
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
