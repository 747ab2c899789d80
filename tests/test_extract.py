"""Unit tier: extraction on tiny random models of every supported architecture."""

import pytest
import torch
from tiny import CONFIGS, PROMPTS, tiny_model
from tolerance import OTHER_IMPLEMENTATION, SAME_MATH, assert_close_to_scale

import interp
from interp.model.batching import pad_batch
from interp.model.hooks import reading_hooks
from interp.model.sites import Site, layer_site, site_width


def reference_hidden_states(model, prompts):
    batch = pad_batch(model.tokenize(prompts), model.tokenizer.pad_token_id, model.device)
    with torch.inference_mode():
        out = model.hf(**batch, output_hidden_states=True)
    return [h.cpu() for h in out.hidden_states], out.logits.cpu()


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def model(request):
    return tiny_model(request.param)


def test_matches_output_hidden_states(model):
    acts = interp.extract(model, PROMPTS, progress=False)
    hs, _ = reference_hidden_states(model, PROMPTS)
    assert acts.tensor.shape == (len(PROMPTS), model.n_layers, model.d_model)
    assert acts.layers == list(range(model.n_blocks + 1))
    for layer in range(model.n_blocks):
        assert_close_to_scale(acts.layer(layer), hs[layer][:, -1], SAME_MATH)
    # HF's last entry is after the final norm; polylens keeps the raw residual there.
    with torch.inference_mode():
        normed = model.final_norm(acts.layer(model.n_blocks).to(model.device)).cpu()
    assert_close_to_scale(normed, hs[-1][:, -1], SAME_MATH)
    assert not torch.allclose(acts.layer(model.n_blocks), hs[-1][:, -1])


def test_independent_of_batch_padding(model):
    together = interp.extract(model, PROMPTS, batch_size=len(PROMPTS), progress=False)
    alone = interp.extract(model, PROMPTS, batch_size=1, progress=False)
    assert_close_to_scale(together.tensor, alone.tensor, SAME_MATH)


def hook_ids(model):
    # transformers installs hooks of its own (for output_hidden_states); compare, don't count.
    return [(list(b._forward_hooks), list(b._forward_pre_hooks)) for b in model.blocks]


def test_logits_unchanged_and_no_hook_left(model):
    _, before = reference_hidden_states(model, PROMPTS)
    hooks_before = hook_ids(model)
    interp.extract(model, PROMPTS, layers=[0, 1], progress=False)
    _, after = reference_hidden_states(model, PROMPTS)
    assert torch.equal(before, after)
    assert hook_ids(model) == hooks_before


def test_positions_agree_with_all(llama):
    all_rows = interp.extract(llama, PROMPTS, positions="all", progress=False)
    per_prompt = all_rows.per_prompt()
    lengths = [len(ids) for ids in llama.tokenize(PROMPTS)]
    assert [p.shape[0] for p in per_prompt] == lengths
    last = interp.extract(llama, PROMPTS, positions="last", progress=False).tensor
    mean = interp.extract(llama, PROMPTS, positions="mean", progress=False).tensor
    first = interp.extract(llama, PROMPTS, positions=0, progress=False).tensor
    idx = [n // 2 for n in lengths]
    chosen = interp.extract(llama, PROMPTS, positions=idx, progress=False).tensor
    spans = [(0, min(2, n)) for n in lengths]
    spanned = interp.extract(llama, PROMPTS, positions=spans, progress=False).per_prompt()
    for i, rows in enumerate(per_prompt):
        assert_close_to_scale(last[i], rows[-1], SAME_MATH)
        assert_close_to_scale(first[i], rows[0], SAME_MATH)
        assert_close_to_scale(mean[i], rows.mean(0), SAME_MATH)
        assert_close_to_scale(chosen[i], rows[idx[i]], SAME_MATH)
        assert_close_to_scale(spanned[i], rows[: spans[i][1]], SAME_MATH)
    with pytest.raises(interp.PolylensError, match="several rows"):
        _ = all_rows.tensor


def test_layer_subset_and_negative_index(llama):
    full = interp.extract(llama, PROMPTS, progress=False)
    sub = interp.extract(llama, PROMPTS, layers=[-1, 1], progress=False)
    assert sub.layers == [1, llama.n_blocks]
    assert_close_to_scale(sub.tensor, full.tensor[:, [1, llama.n_blocks]], SAME_MATH)


def test_forward_stops_after_deepest_layer(llama):
    calls = []
    handle = llama.blocks[-1].register_forward_hook(lambda *a: calls.append(1))
    try:
        interp.extract(llama, PROMPTS, layers=[1], progress=False)
        assert calls == []
        interp.extract(llama, PROMPTS, layers="all", progress=False)
        assert calls
    finally:
        handle.remove()


def test_hooks_removed_when_batch_raises(llama):
    def boom(hidden):
        raise RuntimeError("inside a batch")

    hooks_before = hook_ids(llama)
    with pytest.raises(RuntimeError, match="inside a batch"):
        with reading_hooks(llama, [layer_site(0), layer_site(2)], boom) as captured:
            assert hook_ids(llama) != hooks_before
            llama.body(**pad_batch(llama.tokenize(PROMPTS), 0, llama.device))
    assert captured == {}
    assert hook_ids(llama) == hooks_before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(layers=[99]), "layer 99 is out of range"),
        (dict(layers="nope"), "comma-separated"),
        (dict(positions=50), "position 50 is outside prompt"),
        (dict(positions=[(0, 99)] * len(PROMPTS)), r"span \(0, 99\) is outside"),
        (dict(positions=[0, 1]), "got 2 positions for 5 prompts"),
        (dict(positions="middle"), "unknown positions"),
        (dict(backend="pyvene"), "unknown backend"),
        (dict(dtype="int8"), "unknown storage dtype"),
    ],
)
def test_bad_requests_get_clear_errors(llama, kwargs, message):
    with pytest.raises(interp.PolylensError, match=message):
        interp.extract(llama, PROMPTS, progress=False, **kwargs)


def test_empty_prompt_list(llama):
    with pytest.raises(interp.PolylensError, match="prompt list is empty"):
        interp.extract(llama, [], progress=False)


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_backends_agree_with_hooks(model, backend):
    arch = model.hf.config.model_type
    why = model.adapter.unsupported(backend)
    if why:  # refused in one line, before any forward pass
        with pytest.raises(interp.PolylensError, match=f"the {backend} backend does not support"):
            interp.extract(model, PROMPTS, backend=backend, progress=False)
        pytest.skip(f"{backend} does not support {arch}: {why}")
    logits_before = model.logits(PROMPTS)
    hooks = interp.extract(model, PROMPTS, positions="all", progress=False)
    other = interp.extract(model, PROMPTS, positions="all", backend=backend, progress=False)
    assert_close_to_scale(other.flat, hooks.flat, OTHER_IMPLEMENTATION)
    # TransformerLens rewires the modules it wraps: it must wrap a copy, never the user's model.
    assert torch.equal(model.logits(PROMPTS), logits_before)
    assert type(model.blocks[0]).__module__.startswith("transformers.")


def test_float16_storage(llama):
    acts = interp.extract(llama, PROMPTS, dtype="float16", progress=False)
    assert acts.flat.dtype == torch.float16
    assert acts.meta["dtype"] == "float16"


def test_named_sites(model):
    names = ["resid_pre.1", "attn_out.1", "mlp_out.1", "resid_post.1"]
    acts = interp.extract(model, PROMPTS, sites=names, progress=False)
    assert acts.sites == names and acts.layers == []
    assert acts.tensor.shape == (len(PROMPTS), 4, model.d_model)
    # a block adds attention and MLP to its input
    pre, attn, mlp, post = (acts.site(n) for n in names)
    assert_close_to_scale(pre + attn + mlp, post, SAME_MATH)
    # residual sites are the residual layers
    layers = interp.extract(model, PROMPTS, layers=[1, 2], progress=False)
    assert_close_to_scale(acts.site("resid_pre.1"), layers.layer(1), SAME_MATH)
    assert_close_to_scale(acts.site("resid_post.1"), layers.layer(2), SAME_MATH)
    assert layers.sites == ["resid_post.0", "resid_post.1"]  # layer i is block i-1's output
    if model.adapter.mlp_down is None:  # a mixture of experts: no one layer of neurons
        with pytest.raises(interp.PolylensError, match=r"no one layer of MLP neurons; read mlp_"):
            interp.extract(model, PROMPTS, sites="mlp_act.*", progress=False)
        return
    neurons = interp.extract(model, PROMPTS, sites="mlp_act.*", positions="all", progress=False)
    width = site_width(model, Site("mlp_act", 0))
    assert neurons.flat.shape[1:] == (model.n_blocks, width) and width != model.d_model


def test_named_sites_in_the_store(llama, tmp_path):
    store = interp.ActivationStore(tmp_path)
    first = interp.extract(llama, PROMPTS, sites="mlp_act.*", store=store, progress=False)
    again = store.load(store.ls()[0]["key"])
    assert again.sites == first.sites and torch.equal(again.tensor, first.tensor)
    residual = interp.extract(llama, PROMPTS, layers=[1], store=store, progress=False)
    assert len(store.ls()) == 2 and residual.sites == ["resid_post.0"]
    with pytest.raises(interp.PolylensError, match="different widths"):
        interp.extract(llama, PROMPTS, sites=["mlp_act.0", "mlp_out.0"], progress=False)
    with pytest.raises(interp.PolylensError, match="backend='hooks'"):
        interp.extract(llama, PROMPTS, sites="mlp_out.0", backend="nnsight", progress=False)
