"""Unit tier: logit lens, token sets, collisions and the tuned lens on tiny random models."""

import math
from dataclasses import replace

import pytest
import torch
from tiny import CONFIGS, PROMPTS, tiny_model
from tolerance import SAME_MATH, assert_close_to_scale

import interp
from interp.lens import apply_lens, collisions, first_tokens
from interp.lens.tuned import TunedLens, TunedLensConfig, kl_per_layer, train_tuned_lens


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def model(request):
    return tiny_model(request.param)


def model_logprobs(model, prompts):
    return torch.log_softmax(model.logits(prompts), dim=-1).cpu()


def test_last_layer_reproduces_model_logprobs(model):
    acts = interp.extract(model, PROMPTS, progress=False)
    out = apply_lens(model, acts, top_k=model.unembed.weight.shape[0])
    expected = model_logprobs(model, PROMPTS)
    full = torch.full_like(expected, -math.inf).scatter(
        1, out.top_ids[:, -1], out.top_logprobs[:, -1]
    )
    assert_close_to_scale(full, expected, SAME_MATH)
    entropy = -(expected.exp() * expected).sum(-1)
    assert_close_to_scale(out.entropy[:, -1], entropy, SAME_MATH)


def test_softcap_is_applied():
    gemma = tiny_model("gemma3_text")
    assert gemma.softcap == 30.0
    # Random weights give logits well below the cap, where tanh changes nothing: scale the final
    # norm (Gemma's multiplies by 1 + weight, and reads only the output) to reach far past it.
    with torch.no_grad():
        gemma.final_norm.weight.fill_(399.0)
    acts = interp.extract(gemma, PROMPTS, progress=False)
    vocab = gemma.unembed.weight.shape[0]
    out = apply_lens(gemma, acts, top_k=vocab)
    lens = torch.full((len(PROMPTS), gemma.n_layers, vocab), -math.inf)
    lens.scatter_(2, out.top_ids, out.top_logprobs)
    with torch.inference_mode():
        raw = gemma.unembed(gemma.final_norm(acts.tensor.to(gemma.device))).float().cpu()
    assert raw.abs().max() > 100  # far past the cap: capped and uncapped logits differ a lot
    by_hand = torch.log_softmax(30.0 * torch.tanh(raw / 30.0), dim=-1)
    assert_close_to_scale(lens, by_hand, SAME_MATH)
    assert_close_to_scale(lens[:, -1], model_logprobs(gemma, PROMPTS), SAME_MATH)
    assert (lens - torch.log_softmax(raw, dim=-1)).abs().max() > 10


def full_lens(model, acts):
    """Log-probs of the whole vocabulary at every layer, from the lens."""
    vocab = model.unembed.weight.shape[0]
    out = apply_lens(model, acts, top_k=vocab)
    lens = torch.full((len(PROMPTS), model.n_layers, vocab), -math.inf)
    return lens.scatter_(2, out.top_ids, out.top_logprobs)


def test_logit_scale_is_applied():
    cohere = tiny_model("cohere")
    assert cohere.logit_scale == 4.0
    acts = interp.extract(cohere, PROMPTS, progress=False)
    lens = full_lens(cohere, acts)
    with torch.inference_mode():
        raw = cohere.unembed(cohere.final_norm(acts.tensor.to(cohere.device))).float().cpu()
    assert_close_to_scale(lens, torch.log_softmax(4.0 * raw, dim=-1), SAME_MATH)
    assert_close_to_scale(lens[:, -1], model_logprobs(cohere, PROMPTS), SAME_MATH)
    assert (lens - torch.log_softmax(raw, dim=-1)).abs().max() > 0.1  # unscaled is far off


def test_multimodal_gemma3_head_has_no_softcap():
    gemma = tiny_model("gemma3")
    # Its text config names a cap, which Gemma3ForConditionalGeneration's head never applies.
    assert gemma.hf.config.get_text_config().final_logit_softcapping == 30.0
    assert gemma.softcap is None
    with torch.no_grad():
        gemma.final_norm.weight.fill_(399.0)  # logits far past the cap, as in test_softcap
    acts = interp.extract(gemma, PROMPTS, progress=False)
    with torch.inference_mode():
        raw = gemma.unembed(gemma.final_norm(acts.tensor.to(gemma.device))).float().cpu()
    assert raw.abs().max() > 100
    assert_close_to_scale(full_lens(gemma, acts)[:, -1], model_logprobs(gemma, PROMPTS), SAME_MATH)
    # A row naming a soft-cap reads it from the text config of a multimodal model.
    gemma.adapter = replace(gemma.adapter, softcap_attr="final_logit_softcapping")
    assert gemma.softcap == 30.0


def test_token_sets_and_chunking():
    llama = tiny_model("llama")
    acts = interp.extract(llama, PROMPTS, progress=False)
    sets = [{"a": [5, 7, 9], "b": [11], "none": []} for _ in PROMPTS]
    big = apply_lens(llama, acts, token_sets=sets, top_k=320)
    small = apply_lens(llama, acts, token_sets=sets, top_k=320, memory_budget_mb=0.001)
    # Chunks of the vocabulary: the same sums in another order.
    assert_close_to_scale(big.set_logprobs, small.set_logprobs, SAME_MATH)
    assert_close_to_scale(big.entropy, small.entropy, SAME_MATH)
    full = torch.empty(len(PROMPTS), len(acts.layers), 320)
    full.scatter_(2, big.top_ids, big.top_logprobs.exp())
    # Probabilities: scale 1, so the budget is absolute here.
    assert_close_to_scale(big.probs("a"), full[..., [5, 7, 9]].sum(-1), SAME_MATH)
    assert_close_to_scale(big.probs("b"), full[..., 11], SAME_MATH)
    assert (big.probs("none") == 0).all()


def test_lens_refuses_other_models_activations():
    acts = interp.extract(tiny_model("llama", seed=1), PROMPTS, progress=False)
    with pytest.raises(interp.PolylensError, match="activations come from"):
        apply_lens(tiny_model("llama", seed=0), acts)


def test_first_tokens_and_collisions():
    tok = tiny_model("llama").tokenizer
    toks = first_tokens(tok, "paris")
    assert toks and all(tok.decode([t]).strip() for t in toks)
    assert tok("Paris", add_special_tokens=False)["input_ids"][0] in toks
    found = collisions({"en": ["Paris"], "fr": ["Paris"], "zh": ["巴黎"]}, tok)
    assert list(found) == [("en", "fr")]
    assert tok("Paris", add_special_tokens=False)["input_ids"][0] in found[("en", "fr")]


def test_untrained_tuned_lens_is_the_logit_lens():
    llama = tiny_model("llama")
    acts = interp.extract(llama, PROMPTS, progress=False)
    lens = TunedLens(llama.n_layers, llama.d_model)
    plain = apply_lens(llama, acts, top_k=4)
    tuned = apply_lens(llama, acts, top_k=4, translators=lens)
    torch.testing.assert_close(tuned.top_logprobs, plain.top_logprobs)


def test_tuned_lens_training_lowers_kl():
    llama = tiny_model("llama")
    texts = [p + " " + q for p in PROMPTS for q in PROMPTS]
    resid = interp.extract(llama, texts, positions="all", progress=False).flat
    train, held_out = resid[::2], resid[1::2]
    lens, losses = train_tuned_lens(
        llama, train, TunedLensConfig(steps=60, tokens_per_step=32, lr=1e-2)
    )
    assert losses[-1] < losses[0]
    tuned, logit = kl_per_layer(llama, held_out, lens), kl_per_layer(llama, held_out)
    assert tuned[-1] == pytest.approx(0, abs=1e-5) and logit[-1] == pytest.approx(0, abs=1e-5)
    assert sum(tuned[:-1]) < sum(logit[:-1])


def test_tuned_lens_is_cached_per_model(monkeypatch):
    from interp.lens import tuned as tuned_lens

    llama = tiny_model("llama")
    config = TunedLensConfig(steps=3, tokens_per_step=4)
    first = tuned_lens.load_or_train_tuned_lens(llama, config)
    assert tuned_lens._path(llama, config).joinpath("provenance.json").is_file()
    monkeypatch.setattr(tuned_lens, "train_tuned_lens", lambda *a, **k: pytest.fail("retrained"))
    again = tuned_lens.load_or_train_tuned_lens(llama, config)
    assert torch.equal(again.weight.cpu(), first.weight.cpu())  # read back, not recomputed
    rows = tuned_lens.evaluate_tuned_lens(llama, again, config)
    assert [r["layer"] for r in rows] == list(range(llama.n_layers))
    assert rows[-1]["kl_logit_lens"] == pytest.approx(0, abs=1e-5)


def test_model_without_final_norm_is_a_clear_error():
    from interp.model.models import LoadedModel

    llama = tiny_model("llama")
    del llama.hf.model.norm
    with pytest.raises(interp.PolylensError, match="has no module at 'model.norm'"):
        LoadedModel(llama.hf, llama.tokenizer, "broken")
    with pytest.raises(interp.PolylensError, match="has no module at 'model.norm'"):
        llama.final_norm  # noqa: B018
