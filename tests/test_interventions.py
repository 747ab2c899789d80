"""Unit tier: named sites and edits on tiny random models of every architecture."""

import re
from dataclasses import replace

import pytest
import torch
from tiny import CONFIGS, PROMPTS, tiny_model
from tolerance import SAME_MATH, assert_close_to_scale, max_relative_error

import interp
from interp.analysis.neurons import activation_probability
from interp.interventions import (
    Ablate,
    Add,
    Apply,
    Patch,
    directional_ablation,
    intervene,
    orthogonalize,
)
from interp.model.sites import Site, parse_sites, recording, site_width

EXACT = 1e-6  # an edit that changes nothing must leave logits unchanged to this (relative)
NO_COMPONENT = 1e-5  # a residual's component along an ablated direction, relative to its norm


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def model(request):
    return tiny_model(request.param)


def unit(d, seed=0):
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def all_hooks(model):
    return [(list(m._forward_hooks), list(m._forward_pre_hooks)) for m in model.hf.modules()]


def test_site_names_and_wildcards(llama):
    n = llama.n_blocks
    sites = parse_sites(llama, ["embed", "mlp_out.*", "resid_pre.1", "mlp_out.0"])
    assert [s.name for s in sites] == ["embed"] + [f"mlp_out.{i}" for i in range(n)] + [
        "resid_pre.1"
    ]
    assert Site("resid_post", 1).layer == 2 and Site("resid_pre", 0).layer == 0
    assert site_width(llama, Site("mlp_act", 0)) == llama.hf.config.intermediate_size
    for bad, message in [
        ("mlp.3", "unknown site"),
        (f"resid_pre.{n}", "block index"),
        ("attn_out", "block index"),
        ("embed.1", "no block index"),
    ]:
        with pytest.raises(interp.PolylensError, match=message):
            parse_sites(llama, bad)


def test_residual_sites_are_the_extracted_layers(model):
    acts = interp.extract(model, PROMPTS, positions="all", progress=False)
    with recording(model, ["resid_pre.0", "resid_post.*"]) as rec:
        model.logits(PROMPTS)
    batch = [x[0] for x in rec.values()]  # one forward pass
    per_prompt = acts.per_prompt()
    lengths = [len(ids) for ids in model.tokenize(PROMPTS)]
    # extraction sorts prompts longest first; compare each prompt's rows (left-padded here)
    for i, rows in enumerate(per_prompt):
        for layer, x in enumerate(batch):
            assert_close_to_scale(x[i, -lengths[i] :], rows[:, layer], SAME_MATH)


def test_attn_and_mlp_out_add_up_to_the_block(model):
    with recording(model, ["resid_pre.1", "attn_out.1", "mlp_out.1", "resid_post.1"]) as rec:
        model.logits(PROMPTS)
    pre, attn, mlp, post = (rec[k][0] for k in rec)
    assert_close_to_scale(pre + attn + mlp, post, SAME_MATH)


def mlp_by_hand(block):
    """The module whose first input is the MLP's input, and the MLP's hidden activation of it."""
    if hasattr(block, "fc1"):  # XGLM: fc1 -> activation -> fc2 inside the block
        return block.fc1, lambda h: block.activation_fn(block.fc1(h))
    mlp = block.mlp
    if hasattr(mlp, "gate_up_proj"):  # Phi-3, fused: act(gate) * up

        def fused(h):
            gate, up = mlp.gate_up_proj(h).chunk(2, dim=-1)
            return mlp.activation_fn(gate) * up

        return mlp, fused
    if hasattr(mlp, "gate_proj"):  # gated MLP: act(gate(h)) * up(h)
        return mlp, lambda h: mlp.act_fn(mlp.gate_proj(h)) * mlp.up_proj(h)
    if hasattr(mlp, "dense_h_to_4h"):  # BLOOM: gelu(dense_h_to_4h(h))
        return mlp, lambda h: mlp.gelu_impl(mlp.dense_h_to_4h(h))
    return mlp, lambda h: mlp.act(mlp.c_fc(h))  # GPT-2: act(c_fc(h))


def test_mlp_act_is_the_down_projection_input(model):
    if model.adapter.mlp_down is None:  # a mixture of experts: refused everywhere, in one line
        refusal = r"site mlp_act.1: \w+ routes each token .* read mlp_out.1 .* instead"
        with pytest.raises(interp.PolylensError, match=refusal):
            with recording(model, "mlp_act.1"):
                pass
        with pytest.raises(interp.PolylensError, match=refusal):
            with intervene(model, {"mlp_act.1": Apply(lambda x: x)}):
                pass
        with pytest.raises(interp.PolylensError, match="no one layer of MLP neurons"):
            activation_probability(model, {"en": PROMPTS[:2], "fr": PROMPTS[2:]})
        return
    entry, by_hand_of = mlp_by_hand(model.blocks[1])
    seen = {}
    handle = entry.register_forward_pre_hook(lambda m, args: seen.__setitem__("in", args[0]))
    try:
        with recording(model, "mlp_act.1") as rec:
            model.logits(PROMPTS)
    finally:
        handle.remove()
    with torch.inference_mode():
        by_hand = by_hand_of(seen["in"])
    assert rec["mlp_act.1"][0].shape[-1] == site_width(model, Site("mlp_act", 1))
    assert_close_to_scale(rec["mlp_act.1"][0], by_hand, SAME_MATH)


def test_edits_that_change_nothing(model):
    before = model.logits(PROMPTS)
    with intervene(model, {}):
        assert torch.equal(model.logits(PROMPTS), before)
    v = unit(model.d_model)
    with intervene(model, {"resid_pre.*": Add(v, coeff=0.0), "mlp_out.1": Apply(lambda x: x)}):
        assert max_relative_error(model.logits(PROMPTS), before) <= EXACT
    with recording(model, "resid_post.0") as rec:
        model.logits(PROMPTS)
    with intervene(model, {"resid_post.0": Patch(rec["resid_post.0"][0])}):
        assert max_relative_error(model.logits(PROMPTS), before) <= EXACT


def test_edits_change_the_logits_and_leave_no_hook(model):
    before, hooks = model.logits(PROMPTS), all_hooks(model)
    v = unit(model.d_model)
    with intervene(model, {"resid_pre.1": Add(v, coeff=50.0, positions=-1)}):
        after = model.logits(PROMPTS)
    assert max_relative_error(after, before) > 1e-3
    assert all_hooks(model) == hooks

    def boom(x):
        raise RuntimeError("inside the forward pass")

    with pytest.raises(RuntimeError, match="inside the forward pass"):
        with intervene(model, {"mlp_out.*": Ablate(v), "attn_out.0": Apply(boom)}):
            model.logits(PROMPTS)
    assert all_hooks(model) == hooks
    assert torch.equal(model.logits(PROMPTS), before)


def test_directional_ablation_removes_the_direction_everywhere(model):
    d = unit(model.d_model, seed=1)
    with intervene(model, directional_ablation(d)):
        acts = interp.extract(model, PROMPTS, positions="all", progress=False)
    x = acts.flat.double()  # [row, layer, d_model]
    component = (x @ d.double()).abs() / x.norm(dim=-1).clamp_min(1e-30)
    assert component.max() <= NO_COMPONENT
    plain = interp.extract(model, PROMPTS, positions="all", progress=False).flat.double()
    assert ((plain @ d.double()).abs() / plain.norm(dim=-1)).max() > 1e-3  # it was there


def test_positions_and_widths_are_checked(llama):
    with pytest.raises(interp.PolylensError, match="count positions from the end"):
        Add(unit(llama.d_model), positions=[0])
    with pytest.raises(interp.PolylensError, match="width"):
        with intervene(llama, {"mlp_act.0": Ablate(unit(llama.d_model))}):
            pass
    with pytest.raises(interp.PolylensError, match="non-zero"):
        Ablate(torch.zeros(llama.d_model))


def test_add_at_the_last_position_only(llama):
    v = unit(llama.d_model)
    with recording(llama, "resid_pre.1") as plain:
        llama.logits(PROMPTS)
    with intervene(llama, {"resid_pre.1": Add(v, coeff=3.0, positions=-1)}):
        with recording(llama, "resid_pre.1") as edited:
            llama.logits(PROMPTS)
    diff = edited["resid_pre.1"][0] - plain["resid_pre.1"][0]
    assert_close_to_scale(diff[:, -1], 3.0 * v.expand(len(PROMPTS), -1), SAME_MATH)
    assert diff[:, :-1].abs().max() == 0


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_orthogonalize_equals_hook_ablation(arch):
    model = tiny_model(arch)
    d = unit(model.d_model, seed=2)
    with intervene(model, directional_ablation(d)):
        hooked_logits = model.logits(PROMPTS)
    refusal = model.adapter.orthogonalize_refusal
    if refusal:
        with pytest.raises(interp.PolylensError, match=re.escape(refusal)):
            orthogonalize(model, d)
        # The refusal is warranted: projecting the weights anyway (those it has) misses.
        model.adapter = replace(model.adapter, orthogonalize_refusal=None, extra_embeds=())
        assert max_relative_error(orthogonalize(model, d).logits(PROMPTS), hooked_logits) > 1e-3
        return
    ortho = orthogonalize(model, d)
    assert max_relative_error(ortho.logits(PROMPTS), hooked_logits) <= 1e-4
    assert max_relative_error(model.logits(PROMPTS), hooked_logits) > 1e-3  # the original is kept


def test_orthogonalize_refuses_gemma():
    gemma = tiny_model("gemma3_text")
    with pytest.raises(interp.PolylensError, match="normalises each sublayer's output"):
        orthogonalize(gemma, unit(gemma.d_model))


def test_sites_match_transformer_lens_hooks():
    from interp.model.backends import _tl_bridge
    from interp.model.batching import pad_batch

    llama = tiny_model("llama")
    bridge = _tl_bridge(llama)
    batch = pad_batch(llama.tokenize(PROMPTS), llama.tokenizer.pad_token_id, llama.device)
    names = {
        "resid_pre": "hook_resid_pre",
        "attn_out": "hook_attn_out",
        "mlp_out": "hook_mlp_out",
        "resid_post": "hook_resid_post",
        "mlp_act": "mlp.hook_post",
    }
    with torch.inference_mode():
        _, cache = bridge.run_with_cache(
            batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
        )
        with recording(llama, [f"{k}.1" for k in names]) as rec:
            llama.hf(**batch)
    real = batch["attention_mask"].bool()  # the two differ only at padding, which nothing reads
    for kind, tl_name in names.items():
        ours, theirs = rec[f"{kind}.1"][0][real], cache[f"blocks.1.{tl_name}"][real]
        assert_close_to_scale(ours, theirs, SAME_MATH)


@pytest.mark.parametrize("use_cache", [True, False])
def test_generation_under_edits(llama, use_cache):
    kw = dict(max_new_tokens=6, use_cache=use_cache)
    plain = llama.generate(PROMPTS, **kw)
    v = unit(llama.d_model, seed=3)
    with intervene(llama, {"resid_pre.*": Add(v, coeff=40.0)}):
        steered = llama.generate(PROMPTS, **kw)
    assert steered != plain
    assert llama.generate(PROMPTS, **kw) == plain  # nothing left behind
    # Patching the prompt's last position with its own values changes nothing; a patch that
    # leaked into KV-cached steps would overwrite every new token with the prompt's last one.
    with recording(llama, "resid_post.1") as rec:
        llama.logits(PROMPTS)
    last = rec["resid_post.1"][0][:, -1]
    with intervene(llama, {"resid_post.1": Patch(last, positions=-1)}):
        if use_cache:
            assert llama.generate(PROMPTS, **kw) == plain
        else:  # without a cache every step reruns the prompt: the patch hits each last token
            assert llama.generate(PROMPTS, **kw) != plain
