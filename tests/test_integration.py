"""Integration tier: the embedded gemma-3-270m (converted once from its GGUF, then cached)."""

import pytest
import torch
from tolerance import (
    DEEP_FORWARD,
    OTHER_IMPLEMENTATION,
    VOCAB_SOFTMAX,
    assert_close_to_scale,
    max_relative_error,
)

import interp
from interp.data import load, prompts_of
from interp.model.batching import pad_batch

pytestmark = pytest.mark.integration

PROMPTS = prompts_of(load("parallel", langs=["en", "fr", "zh", "hi", "sw", "th"]))[:12]


def test_gemma_view(gemma):
    assert gemma.n_blocks == 18 and gemma.d_model == 640 and gemma.n_layers == 19
    assert gemma.unembed.weight.shape == (262144, 640)
    assert gemma.tokenizer.padding_side == "left"


def test_gemma_matches_output_hidden_states(gemma):
    acts = interp.extract(gemma, PROMPTS, batch_size=6, progress=False)
    batch = pad_batch(gemma.tokenize(PROMPTS), gemma.tokenizer.pad_token_id, gemma.device)
    with torch.inference_mode():
        hs = [h.cpu() for h in gemma.hf(**batch, output_hidden_states=True).hidden_states]
    # The residual stream grows to ~1e4 in late layers: compare relative to its scale.
    for layer in range(gemma.n_blocks):
        assert_close_to_scale(acts.layer(layer), hs[layer][:, -1], DEEP_FORWARD)
    with torch.inference_mode():
        normed = gemma.final_norm(acts.layer(gemma.n_blocks).to(gemma.device)).cpu()
    assert_close_to_scale(normed, hs[-1][:, -1], DEEP_FORWARD)


def test_three_backends_agree_on_gemma(gemma):
    logits_before = gemma.logits(PROMPTS[:4])
    hooks = interp.extract(gemma, PROMPTS, batch_size=6, progress=False)
    for backend in ("transformer_lens", "nnsight"):
        other = interp.extract(gemma, PROMPTS, batch_size=6, backend=backend, progress=False)
        for layer in range(gemma.n_layers):
            err = max_relative_error(other.layer(layer), hooks.layer(layer))
            assert err <= OTHER_IMPLEMENTATION, (backend, layer, err)
    assert torch.equal(gemma.logits(PROMPTS[:4]), logits_before)


def test_gemma_store_round_trip(gemma, tmp_path):
    store = interp.ActivationStore(tmp_path, shard_size=5)
    first = interp.extract(gemma, PROMPTS, layers=[0, 9, 18], store=store, progress=False)
    again = store.load(store.ls()[0]["key"])
    assert torch.equal(first.tensor, again.tensor)
    assert again.meta["model"]["name"] == "gemma-3-270m"


def test_smollm_chat_template_extraction():
    model = interp.load_model("smollm2-135m-instruct")
    assert model.n_blocks == 30 and model.adapter.blocks == "model.layers"
    (prompt,) = model.apply_chat_template(["What is the capital of France?"])
    assert "What is the capital of France?" in prompt and prompt.rstrip().endswith("assistant")
    acts = interp.extract(model, [prompt], layers=[0, 15, 30], progress=False)
    assert acts.tensor.shape == (1, 3, model.d_model)
    assert model.logits([prompt]).shape[-1] == model.unembed.weight.shape[0]


def test_gemma_logit_lens_is_exact_and_matches_transformer_lens(gemma):
    from interp.lens import apply_lens
    from interp.model.backends import _tl_bridge

    prompts = PROMPTS[:4]
    acts = interp.extract(gemma, prompts, progress=False)
    vocab = gemma.unembed.weight.shape[0]
    out = apply_lens(gemma, acts, top_k=vocab, memory_budget_mb=1024)
    ours = torch.full((len(prompts), gemma.n_layers, vocab), -torch.inf)
    ours.scatter_(2, out.top_ids, out.top_logprobs)
    model_logp = torch.log_softmax(gemma.logits(prompts), dim=-1).cpu()
    assert_close_to_scale(ours[:, -1], model_logp, VOCAB_SOFTMAX)

    bridge = _tl_bridge(gemma)
    batch = pad_batch(gemma.tokenize(prompts), gemma.tokenizer.pad_token_id, gemma.device)
    with torch.inference_mode():
        _, cache = bridge.run_with_cache(
            batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
        )
        accumulated = cache.accumulated_resid(apply_ln=True, pos_slice=-1)  # [layer, prompt, d]
        tl_probs = torch.softmax(bridge.unembed(accumulated).float(), dim=-1).transpose(0, 1)
    # Probabilities have scale 1 wherever some token is likely.
    assert_close_to_scale(tl_probs.cpu(), ours.exp(), OTHER_IMPLEMENTATION)


def _unit(d_model, seed=0):
    v = torch.randn(d_model, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def test_gemma_directional_ablation_removes_the_direction(gemma):
    from interp.interventions import directional_ablation, intervene

    d = _unit(gemma.d_model)
    with intervene(gemma, directional_ablation(d)):
        acts = interp.extract(gemma, PROMPTS[:6], positions="all", progress=False)
    x = acts.flat.double()  # residuals reach ~1e4: the component is measured against the norm
    assert ((x @ d.double()).abs() / x.norm(dim=-1)).max() <= 1e-5


def test_smollm_orthogonalize_equals_hook_ablation():
    from interp.interventions import directional_ablation, intervene, orthogonalize

    model = interp.load_model("smollm2-135m-instruct")
    d = _unit(model.d_model, seed=1)
    with intervene(model, directional_ablation(d)):
        hooked = model.logits(PROMPTS[:6])
    ortho = orthogonalize(model, d).logits(PROMPTS[:6])
    assert max_relative_error(ortho, hooked) <= OTHER_IMPLEMENTATION  # other weights, same math
    assert max_relative_error(model.logits(PROMPTS[:6]), hooked) > 1e-3
