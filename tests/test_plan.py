"""Unit tier: ``polylens plan`` against what each experiment's run really does on a tiny model.

Every experiment's ``workload`` is checked against its run: the tokens the run feeds the model
(counted at the input embedding, pad tokens left out) and the bytes its activation store
shards hold. Where a docstring states an upper bound (generation that may stop early,
candidates the model's activations may drop), the count must lie within it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open
from tiny import save_tiny

import experiments.base
from experiments import resolve_config, run_config
from experiments.cli import main
from experiments.plan import make_plan

GEMMA, LLAMA = "gemma3_text", "llama"
# case -> (experiment, tiny architecture, smallest config, whether the workload is a bound)
CASES = {
    "latent-language": (
        "latent-language", GEMMA, {"langs": "en,fr,zh", "n_words": 2, "bootstrap": 20}, False
    ),
    "translation-barrier": (
        "translation-barrier", GEMMA, {"langs": "en,zh", "n_words": 2, "bootstrap": 20}, False
    ),
    # generation may stop before max_new_tokens
    "factual-consistency": (
        "factual-consistency",
        GEMMA,
        {"langs": "en,fr", "n_per_relation": 2, "max_candidates": 3, "bootstrap": 20}
        | {"max_new_tokens": 3},
        True,
    ),
    "knowledge-boundary": (
        "knowledge-boundary",
        GEMMA,
        {"langs": "en,fr", "labels": "construction", "n_per_class": 4, "folds": 2}
        | {"control_shuffles": 1},
        False,
    ),
    # the model's answers stop at their first newline
    "knowledge-boundary-model-labels": (
        "knowledge-boundary",
        GEMMA,
        {"langs": "en,fr", "position": "mean", "n_per_class": 6, "folds": 2}
        | {"control_shuffles": 1},
        True,
    ),
    "linear-shortcut": (
        "linear-shortcut",
        GEMMA,
        {"langs": "en,fr", "relations": ["capital"], "n_per_relation": 2}
        | {"n_train_per_relation": 3, "max_candidates": 3, "jacobian_layers": [1, 3]}
        | {"jacobian_prompts": 1, "n_verify": 2, "n_boot": 20},
        False,
    ),
    "cross-lingual-patching": (
        "cross-lingual-patching",
        LLAMA,
        {"langs": "en,zh", "relations": ["capital", "currency"], "n_per_relation": 2}
        | {"layers": [1], "n_boot": 20},
        False,
    ),
    # near-zero candidates are not scored; generation stops at the end of the turn
    "refusal-direction": (
        "refusal-direction",
        LLAMA,
        {"langs": "en,fr", "n_train": 4, "n_val": 2, "n_test": 2, "layer_stride": 2}
        | {"prune_fraction": 0.0, "n_generate": 1, "max_new_tokens": 3, "rows_per_pass": 16},
        True,
    ),
    "embedding-geometry": (
        "embedding-geometry",
        GEMMA,
        {"min_tokens": 3, "probe_tokens": 20, "neighbour_queries": 3, "neighbours": 5}
        | {"chunk": 50},
        False,
    ),
    "language-neurons": (
        "language-neurons",
        GEMMA,
        {"langs": "en,fr", "n_train_sentences": 3, "n_eval_sentences": 2, "top_rate": 0.05},
        False,
    ),
}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    made = {}

    def get(arch: str) -> str:
        if arch not in made:
            made[arch] = str(save_tiny(arch, tmp_path_factory.mktemp(f"tiny-{arch}")))
        return made[arch]

    return get


@pytest.fixture
def counted(monkeypatch):
    """Tokens every model a run loads reads at its input embedding (pad tokens left out)."""
    counts = {"tokens": 0}
    load = experiments.base.load_model

    def counting_load(*args, **kwargs):
        model = load(*args, **kwargs)
        pad = model.tokenizer.pad_token_id

        def count(_module, inputs):
            counts["tokens"] += int((inputs[0] != pad).sum())

        # The model lives for one run: its hook goes with it.
        model.hf.get_input_embeddings().register_forward_pre_hook(count)
        return model

    monkeypatch.setattr(experiments.base, "load_model", counting_load)
    return counts


def _shards(store: Path) -> tuple[int, int, int]:
    """(bytes of the stored activations, bytes of the shard files, number of shards)."""
    payload = files = n = 0
    for path in store.rglob("shard-*.safetensors"):
        with safe_open(str(path), "pt") as f:
            acts = f.get_tensor("acts")
        payload += acts.numel() * acts.element_size()
        files += path.stat().st_size
        n += 1
    return payload, files, n


@pytest.mark.parametrize("case", CASES)
def test_workload_matches_the_run(case, tiny_dirs, counted, tmp_path, monkeypatch):
    name, arch, fields, bound = CASES[case]
    if case == "knowledge-boundary-model-labels":
        import zlib

        from probes import labels

        # A random tiny model knows nothing: let it "know" the facts whose answer hashes even.
        monkeypatch.setattr(
            labels, "is_correct", lambda text, answers: zlib.crc32(answers[0].encode()) % 2 == 0
        )
    store = tmp_path / "store"
    settings = {"model": tiny_dirs(arch), "out": str(tmp_path / "out"), "store": str(store)}
    config = resolve_config(name, None, None, fields | settings)
    estimate = make_plan(name, config, timed=False).estimate
    run_config(name, config)
    predicted = estimate.tokens_forward + estimate.tokens_generated
    if bound:
        assert 0 < counted["tokens"] <= predicted
    else:
        assert counted["tokens"] == predicted
    payload, files, n = _shards(store)
    assert payload == estimate.store_bytes
    # Beyond the activations: each shard's header and its prompts' offsets (int64).
    sequences = sum(p["sequences"] for p in estimate.passes)
    assert 0 <= files - payload <= n * 1024 + 8 * (sequences + n)
