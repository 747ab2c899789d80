"""Unit tier (tiny random models) and one integration test: the final-layer linear shortcut."""

import pytest
import torch
from tiny import tiny_model
from tolerance import SAME_MATH, VOCAB_SOFTMAX, assert_close_to_scale
from torch import nn

from interp.analysis.factual import candidate_logprobs, continuation
from interp.analysis.shortcut import (
    AffineMap,
    candidate_tails,
    first_token_ids,
    fit_least_squares,
    identity_map,
    mean_jacobian,
    prompt_jacobian,
    shortcut_candidate_logprobs,
    shortcut_edits,
    shortcut_logits,
)
from interp.errors import PolylensError
from interp.extract import extract
from interp.interventions import intervene
from interp.lens import decode_logits
from interp.model.sites import hooked, layer_site

PROMPTS = ["The capital of France is", "法国的首都是", "Mji mkuu wa Ufaransa ni", "La capitale"]


@pytest.fixture(scope="module", params=["gemma3_text", "llama", "gpt2"])
def model(request):
    return tiny_model(request.param)


def random_map(d, layer, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(d, d, generator=gen, dtype=torch.float64) / d**0.5
    return AffineMap(layer, w, torch.randn(d, generator=gen, dtype=torch.float64), "test")


def test_identity_shortcut_at_the_last_layer_is_the_model(model):
    final = model.n_blocks
    ref = model.logits(PROMPTS)
    with intervene(model, shortcut_edits(model, identity_map(final, model.d_model))):
        got = model.logits(PROMPTS)
    assert_close_to_scale(got, ref, SAME_MATH)
    h_final = extract(model, PROMPTS, layers=[final], progress=False).layer(final)
    assert_close_to_scale(
        shortcut_logits(model, h_final, identity_map(final, model.d_model)), ref, SAME_MATH
    )


def test_the_edit_equals_decoding_the_mapped_state(model):
    layer = 1
    amap = random_map(model.d_model, layer)
    h = extract(model, PROMPTS, layers=[layer], progress=False).layer(layer)
    ref = shortcut_logits(model, h, amap, beta=1.7)
    with intervene(model, shortcut_edits(model, amap, beta=1.7)):
        got = model.logits(PROMPTS, batch_size=3)  # left padding and two batches
    assert_close_to_scale(got, ref, SAME_MATH)
    assert (got - model.logits(PROMPTS)).abs().max() > 1e-3  # the shortcut did change them


def test_least_squares_recovers_a_planted_affine_map():
    gen = torch.Generator().manual_seed(1)
    n, d_in, d_out = 300, 24, 16
    x = torch.randn(n, d_in, generator=gen, dtype=torch.float64) * 5 + 2
    w = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    b = torch.randn(d_out, generator=gen, dtype=torch.float64)
    amap = fit_least_squares(x.float(), (x @ w.T + b).float(), layer=3, ridge=0.0)
    assert torch.allclose(amap.weight, w, atol=1e-4) and torch.allclose(amap.bias, b, atol=1e-3)
    assert amap.n_prompts == n and amap.method == "least_squares"
    # with a ridge the estimate shrinks, but stays close for a well-conditioned design
    ridged = fit_least_squares(x, x @ w.T + b, layer=3, ridge=1e-3)
    assert 0 < (ridged.weight - w).abs().max() < 0.05


def test_least_squares_dual_form_equals_the_primal_ridge_solution():
    gen = torch.Generator().manual_seed(2)
    n, d = 10, 30  # fewer prompts than dimensions: the dual (n x n) system is solved
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randn(n, d, generator=gen, dtype=torch.float64)
    ridge = 0.1
    amap = fit_least_squares(x, y, layer=0, ridge=ridge)
    xc, yc = x - x.mean(0), y - y.mean(0)
    lam = ridge * float((xc * xc).sum()) / d
    primal = torch.linalg.solve(xc.T @ xc + lam * torch.eye(d, dtype=torch.float64), xc.T @ yc).T
    assert torch.allclose(amap.weight, primal, atol=1e-9)
    assert torch.allclose(amap.bias, y.mean(0) - primal @ x.mean(0), atol=1e-9)


def test_least_squares_input_errors():
    with pytest.raises(PolylensError, match="at least 2 training prompts"):
        fit_least_squares(torch.zeros(1, 4), torch.zeros(1, 4), layer=0)
    with pytest.raises(PolylensError, match="same prompts"):
        fit_least_squares(torch.zeros(3, 4), torch.zeros(2, 4), layer=0)


def test_prompt_jacobian_equals_full_sequence_autograd(model):
    """The cached last-token computation against a plain backward through the whole prompt."""
    prompt, layer = PROMPTS[0], 1
    jac, h_in, h_out = prompt_jacobian(model, prompt, layer, chunk_size=24)
    ids = torch.tensor(model.tokenize([prompt]), device=model.device)
    held = {}

    def take_in(x):
        held["h"] = x.detach().clone().requires_grad_(True)
        return held["h"]

    def take_out(x):
        held["out"] = x

    with hooked(model, [(layer_site(layer), take_in), (layer_site(model.n_blocks), take_out)]):
        model.body(input_ids=ids, use_cache=False)
    out = held["out"][0, -1]
    rows = [
        torch.autograd.grad(out[k], held["h"], retain_graph=True)[0][0, -1]
        for k in range(model.d_model)
    ]
    assert_close_to_scale(jac, torch.stack(rows), SAME_MATH)
    assert_close_to_scale(h_in, held["h"][0, -1], SAME_MATH)
    assert_close_to_scale(h_out, out, SAME_MATH)


def test_prompt_jacobian_at_the_last_layer_is_the_identity(llama):
    final = llama.n_blocks
    jac, h_in, h_out = prompt_jacobian(llama, PROMPTS[0], final)
    assert torch.equal(jac, torch.eye(llama.d_model, dtype=torch.float64))
    ref = extract(llama, PROMPTS[:1], layers=[final], progress=False).layer(final)[0]
    assert_close_to_scale(h_in, ref, SAME_MATH)
    assert torch.equal(h_in, h_out)


class AffineBlock(nn.Module):
    """A block that is an affine map of the residual stream (attention and MLP left out)."""

    def __init__(self, d, seed):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.a = nn.Parameter(torch.eye(d) + 0.1 * torch.randn(d, d, generator=gen))
        self.c = nn.Parameter(torch.randn(d, generator=gen))

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states @ self.a.T + self.c


def test_mean_jacobian_is_exact_when_the_blocks_are_affine():
    model = tiny_model("llama")
    d = model.d_model
    blocks = [AffineBlock(d, seed) for seed in range(model.n_blocks)]
    for i, block in enumerate(blocks):
        model.blocks[i] = block
    layer = 1
    w = torch.eye(d, dtype=torch.float64)
    b = torch.zeros(d, dtype=torch.float64)
    for block in blocks[layer:]:
        a, c = block.a.detach().double(), block.c.detach().double()
        w, b = a @ w, a @ b + c
    amap = mean_jacobian(model, PROMPTS, layer, chunk_size=20)
    assert torch.allclose(amap.weight, w, atol=1e-5)
    assert torch.allclose(amap.bias, b, atol=1e-4)
    assert amap.n_prompts == len(PROMPTS) and amap.method == "jacobian"


def test_scores_from_cached_states_equal_the_scorer_under_the_edit(model):
    conts = [
        [continuation(p, c, lang) for c in cands]
        for p, lang, cands in zip(
            PROMPTS,
            ["en", "zh", "sw", "fr"],
            [["Paris", "Paris na Berlin", "London"], ["巴黎", "x"], ["Paris", "Ufaransa"], ["x"]],
        )
    ]
    layer = 1
    amap = random_map(model.d_model, layer, seed=3)
    acts = extract(model, PROMPTS, layers=[layer, model.n_blocks], progress=False)
    base = candidate_logprobs(model, PROMPTS, conts)
    firsts = first_token_ids(model, conts)
    tails = candidate_tails(model, acts.layer(model.n_blocks), firsts, base)
    got = shortcut_candidate_logprobs(model, acts.layer(layer), amap, firsts, tails, beta=0.8)
    with intervene(model, shortcut_edits(model, amap, beta=0.8)):
        ref = candidate_logprobs(model, PROMPTS, conts, batch_size=3)
    for g, r in zip(got, ref):
        assert_close_to_scale(g, r, VOCAB_SOFTMAX)
    assert any((r - b).abs().max() > 1e-3 for r, b in zip(ref, base))


def test_generation_under_the_shortcut_starts_with_the_shortcut_token(llama):
    layer = 1
    amap = random_map(llama.d_model, layer, seed=4)
    h = extract(llama, PROMPTS, layers=[layer], progress=False).layer(layer)
    first = shortcut_logits(llama, h, amap).argmax(-1)
    with intervene(llama, shortcut_edits(llama, amap)):
        texts = llama.generate(PROMPTS, max_new_tokens=3)
    for text, tok in zip(texts, first.tolist()):
        assert text.startswith(llama.tokenizer.decode([tok]))


def test_edit_errors(llama):
    with pytest.raises(PolylensError, match="d_model"):
        shortcut_edits(llama, identity_map(1, llama.d_model + 1))
    with pytest.raises(PolylensError, match="not in 0"):
        shortcut_edits(llama, identity_map(llama.n_blocks + 1, llama.d_model))


@pytest.mark.integration
def test_gemma_shortcut_from_the_last_layer_keeps_the_answer_and_a_fit_decodes_it(gemma):
    prompts = ["The capital of France is", "La capitale de la France est", "法国的首都是"]
    final = gemma.n_blocks
    acts = extract(gemma, prompts, layers=[12, final], progress=False)
    ref = gemma.logits(prompts)
    got = decode_logits(gemma, identity_map(final, gemma.d_model)(acts.layer(final)))
    assert torch.equal(got.argmax(-1), ref.argmax(-1))
    # a map fitted on these very prompts reproduces their final states: the same top token
    amap = fit_least_squares(acts.layer(12), acts.layer(final), layer=12, ridge=1e-6)
    with intervene(gemma, shortcut_edits(gemma, amap)):
        shortcut = gemma.logits(prompts)
    assert torch.equal(shortcut.argmax(-1), ref.argmax(-1))


def test_linear_shortcut_experiment_end_to_end(tmp_path):
    import json

    from tiny import save_tiny

    from experiments.cli import main

    tiny = save_tiny("gemma3_text", tmp_path / "tiny")
    argv = ["run", "linear-shortcut", "--model", str(tiny), "--langs", "en,fr,zh"]
    argv += ["--out", str(tmp_path / "out")]
    config = tmp_path / "small.yaml"
    config.write_text(
        "n_per_relation: 3\nn_train_per_relation: 4\nmax_candidates: 4\n"
        "jacobian_layers: [1]\njacobian_prompts: 2\nn_verify: 4\nn_boot: 50\nbetas: [1.0, 2.0]\n"
    )
    assert main([*argv, "--config", str(config)]) == 0
    out = tmp_path / "out" / "linear-shortcut"
    for name in (
        "report.html",
        "tables/summary_per_layer.csv",
        "tables/accuracy_per_layer_language.csv",
        "tables/consistency_per_layer_pair.csv",
        "figures/shortcut_accuracy_by_layer.png",
        "figures/shortcut_consistency_by_layer.html",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["best_layer"] < 3 and metrics["n_test_prompts"] > 0
    controls = {c["check"].split(" ")[0]: c["result"] for c in metrics["controls"]}
    assert controls["identity"].startswith("same correctness as the unmodified scorer on")
    n = metrics["n_test_prompts"]
    assert f"on {n}/{n} held-out" in controls["identity"]
    # the edit and the cached-state scores agree on every re-scored fact
    verify = next(c["result"] for c in metrics["controls"] if "re-ranked" in c["check"])
    assert "same top candidate in 4/4" in verify
    assert "jacobian" in (out / "tables/summary_per_layer.csv").read_text()
