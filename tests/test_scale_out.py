"""Unit tier: a model spread by a device map, and remote (NDIF) options reaching nnsight.

On a CPU-only machine a device map that sends some modules to "disk" makes accelerate attach its
device-alignment hooks to every placed module and load the offloaded weights per forward pass
(they sit on the meta device meanwhile): the same code path as blocks spread over several GPUs,
minus the copies. Extraction, the lens, interventions and generation must equal the plain model.
"""

import nnsight
import pytest
import torch
from tiny import PROMPTS, save_tiny

from interp import Ablate, Add, PolylensError, extract, intervene, load_model, orthogonalize
from interp.lens import apply_lens, first_tokens
from interp.model.placement import execution_device, is_offloaded, main_device


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny("gemma3_text", tmp_path_factory.mktemp("tiny-gemma"))


@pytest.fixture(scope="module")
def plain(tiny_dir):
    return load_model(str(tiny_dir), device="cpu")


@pytest.fixture(scope="module")
def spread(tiny_dir, tmp_path_factory):
    # The (tied) embedding and unembedding, block 1 and the final norm on disk, the rest in memory.
    device_map = {
        "model.embed_tokens": "disk",
        "model.rotary_emb": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.layers.2": "cpu",
        "model.norm": "disk",
        "lm_head": "disk",
    }
    offload = tmp_path_factory.mktemp("offload")
    return load_model(str(tiny_dir), device_map=device_map, offload_folder=offload)


def test_the_device_map_is_really_in_effect(spread):
    assert is_offloaded(spread.hf)
    for weight in (spread.blocks[1].self_attn.q_proj.weight, spread.unembed.weight):
        assert weight.device.type == "meta"
    assert hasattr(spread.blocks[1], "_hf_hook") and hasattr(spread.final_norm, "_hf_hook")
    assert execution_device(spread.final_norm) == torch.device("cpu")
    assert spread.device == torch.device("cpu")


def test_placement_reads_accelerates_hooks_and_device_map():
    """The GPU cases, without a GPU: devices are only named, never used."""
    module = torch.nn.Linear(2, 2)
    assert execution_device(module) == torch.device("cpu")  # no hook: its weight's device
    module._hf_hook = type("Hook", (), {"execution_device": "cuda:1"})()
    assert execution_device(module) == torch.device("cuda", 1)
    no_device = type("Hook", (), {"execution_device": None})()
    module._hf_hook = type("SequentialHook", (), {"hooks": [no_device, module._hf_hook]})()
    assert execution_device(module) == torch.device("cuda", 1)
    spread_over = type(
        "HF", (), {"hf_device_map": {"embed": "cpu", "a": "cuda:1", "b": "cuda:0", "c": "disk"}}
    )
    assert main_device(spread_over()) == torch.device("cuda", 1)
    assert main_device(type("HF", (), {"hf_device_map": {"a": "cpu", "b": "disk"}})()) == (
        torch.device("cpu")
    )


def test_extraction_equals_the_plain_model(plain, spread):
    assert spread.fingerprint == plain.fingerprint  # offloaded weights are read for it
    for sites in (["resid_pre.*", "attn_out.*", "mlp_out.*"], ["mlp_act.*"]):
        for positions in ("last", "mean"):
            a = extract(plain, PROMPTS, sites=sites, positions=positions, progress=False)
            b = extract(spread, PROMPTS, sites=sites, positions=positions, progress=False)
            torch.testing.assert_close(b.flat, a.flat, rtol=1e-5, atol=1e-6)


def test_lens_equals_the_plain_model(plain, spread):
    sets = [{"paris": first_tokens(plain.tokenizer, "Paris")}] * len(PROMPTS)
    outs = [
        apply_lens(m, extract(m, PROMPTS, progress=False), token_sets=sets, top_k=5)
        for m in (plain, spread)
    ]
    torch.testing.assert_close(outs[1].set_logprobs, outs[0].set_logprobs, rtol=1e-5, atol=1e-5)
    assert torch.equal(outs[1].top_ids, outs[0].top_ids)


def test_interventions_and_generation_equal_the_plain_model(plain, spread):
    direction = torch.randn(plain.d_model, generator=torch.Generator().manual_seed(0))
    edits = {
        "resid_pre.*": Ablate(direction),
        "attn_out.1": Add(direction, coeff=2.0, positions=-1),  # in the offloaded block
    }
    results = []
    for m in (plain, spread):
        with intervene(m, edits):
            results.append((m.logits(PROMPTS), m.generate(PROMPTS[:2], max_new_tokens=4)))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-5)
    assert results[1][1] == results[0][1]
    with pytest.raises(PolylensError, match="offloaded .*directional_ablation"):
        orthogonalize(spread, direction)


def test_device_map_arguments_are_checked(tiny_dir):
    with pytest.raises(PolylensError, match="either device or device_map"):
        load_model(str(tiny_dir), device="cpu", device_map="auto")
    with pytest.raises(PolylensError, match="only with a device_map"):
        load_model(str(tiny_dir), offload_folder="/tmp/x")


class _Traced(Exception):
    pass


def test_remote_options_reach_nnsight_trace(plain, monkeypatch):
    seen = {}

    class FakeTransformersModel:
        """Stands in for nnsight's: records what it is given; no network, no NDIF."""

        def __init__(self, source, task=None, tokenizer=None):
            seen.update(source=source, task=task, tokenizer=tokenizer)
            self.model = type("Body", (), {"layers": [object()] * plain.n_blocks})()

        def trace(self, batch, **options):
            seen["options"] = options
            seen["batch"] = batch
            raise _Traced

    monkeypatch.setattr(nnsight, "TransformersModel", FakeTransformersModel)
    options = {"remote": True, "backend": "https://ndif.example", "blocking": False}
    with pytest.raises(_Traced):
        extract(plain, PROMPTS[:2], backend="nnsight", backend_options=options, progress=False)
    assert seen["source"] == plain.name  # remote runs load the model by its hub id on NDIF
    # The task LanguageModel pinned: no hub lookup, and the same NDIF deployment key as before.
    assert seen["task"] == "text-generation" and seen["tokenizer"] is plain.tokenizer
    assert seen["options"] == options
    assert set(seen["batch"]) >= {"input_ids", "attention_mask"}
