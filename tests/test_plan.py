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
# case -> (experiment, tiny architecture, smallest config, bound): bound None means exact,
# else the run feeds at most the workload's tokens and generation, and at least its forward
# tokens less those of the passes named (whose sequences the model's activations may drop).
CASES = {
    "latent-language": (
        "latent-language",
        GEMMA,
        {"langs": "en,fr,zh", "n_words": 2, "bootstrap": 20},
        None,
    ),
    # the tuned lens trains only where none is cached (here on a few texts: see _small_world)
    "latent-language-tuned-lens": (
        "latent-language",
        GEMMA,
        {"langs": "en,fr", "n_words": 1, "bootstrap": 20, "lens": "tuned"},
        ("tuned lens training",),
    ),
    "translation-barrier": (
        "translation-barrier",
        GEMMA,
        {"langs": "en,zh", "n_words": 2, "bootstrap": 20},
        None,
    ),
    # generation may stop before max_new_tokens
    "factual-consistency": (
        "factual-consistency",
        GEMMA,
        {"langs": "en,fr", "n_per_relation": 2, "max_candidates": 3, "bootstrap": 20}
        | {"max_new_tokens": 3},
        (),
    ),
    "knowledge-boundary": (
        "knowledge-boundary",
        GEMMA,
        {"langs": "en,fr", "labels": "construction", "n_per_class": 4, "folds": 2}
        | {"control_shuffles": 1},
        None,
    ),
    # the model's answers stop at their first newline
    "knowledge-boundary-model-labels": (
        "knowledge-boundary",
        GEMMA,
        {"langs": "en,fr", "position": "mean", "n_per_class": 6, "folds": 2}
        | {"control_shuffles": 1},
        (),
    ),
    "linear-shortcut": (
        "linear-shortcut",
        GEMMA,
        {"langs": "en,fr", "relations": ["capital"], "n_per_relation": 2}
        | {"n_train_per_relation": 3, "max_candidates": 3, "jacobian_layers": [1, 3]}
        | {"jacobian_prompts": 1, "n_verify": 2, "n_boot": 20},
        None,
    ),
    "cross-lingual-patching": (
        "cross-lingual-patching",
        LLAMA,
        {"langs": "en,zh", "relations": ["capital", "currency"], "n_per_relation": 2}
        | {"layers": [1], "n_boot": 20},
        None,
    ),
    # near-zero candidates are not scored; generation stops at the end of the turn
    "refusal-direction": (
        "refusal-direction",
        LLAMA,
        {"langs": "en", "n_train": 2, "n_val": 1, "n_test": 1, "layer_stride": 2}
        | {"prune_fraction": 0.0, "n_generate": 1, "max_new_tokens": 3, "rows_per_pass": 16},
        ("candidates: ablated", "candidates: added"),
    ),
    "embedding-geometry": (
        "embedding-geometry",
        GEMMA,
        {"min_tokens": 3, "probe_tokens": 20, "neighbour_queries": 3, "neighbours": 5}
        | {"chunk": 50},
        None,
    ),
    "mid-layer-alignment": (
        "mid-layer-alignment",
        GEMMA,
        {"langs": "en,fr", "n_sentences": 4, "k": 2},
        None,
    ),
    "language-neurons": (
        "language-neurons",
        GEMMA,
        {"langs": "en,fr", "n_train_sentences": 3, "n_eval_sentences": 2, "top_rate": 0.05},
        None,
    ),
    # answers are scored at max_new_tokens tokens; controls only where a best setting exists
    "language-steering": (
        "language-steering",
        LLAMA,
        {"langs": "en,fr,zh", "sources": ["en"], "targets": ["fr", "zh"], "n_prompts": 3}
        | {"layers": [1, 3], "coeffs": [4.0, 16.0], "neuron_coeffs": [2.0], "n_parallel": 4}
        | {"max_new_tokens": 4, "top_rate": 0.05, "n_boot": 10, "rows_per_pass": 8},
        ("scoring", "after best"),
    ),
    # zh is a target of en before it is a source: its unsteered answers are generated once
    "language-steering, two sources": (
        "language-steering",
        LLAMA,
        {"langs": "en,fr,zh", "sources": ["en", "zh"], "targets": ["en", "zh", "fr"]}
        | {"n_prompts": 2, "layers": [1], "coeffs": [4.0], "neuron_coeffs": [2.0]}
        | {"n_parallel": 4, "max_new_tokens": 3, "top_rate": 0.05, "n_boot": 10},
        ("scoring", "after best"),
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
    counts, handles = {"tokens": 0}, []
    load = experiments.base.load_model

    def counting_load(*args, **kwargs):
        model = load(*args, **kwargs)
        pad = model.tokenizer.pad_token_id

        def count(_module, inputs):
            counts["tokens"] += int((inputs[0] != pad).sum())

        # A copy of the model (orthogonalization) copies the hook: its passes count too.
        handles.append(model.hf.get_input_embeddings().register_forward_pre_hook(count))
        return model

    monkeypatch.setattr(experiments.base, "load_model", counting_load)
    yield counts
    for handle in handles:
        handle.remove()


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


def _small_world(case: str, monkeypatch) -> None:
    """What a case changes so that a tiny model's run stays small and meaningful."""
    if case == "knowledge-boundary-model-labels":
        import zlib

        from probes import labels

        # A random tiny model knows nothing: let it "know" the facts whose answer hashes even.
        monkeypatch.setattr(
            labels, "is_correct", lambda text, answers: zlib.crc32(answers[0].encode()) % 2 == 0
        )
    if case == "latent-language-tuned-lens":
        from interp.lens import tuned

        # Eight of the training texts, not 1,400: the plan and the run read the same function.
        texts = tuned.training_texts()[:8]
        monkeypatch.setattr(tuned, "training_texts", lambda config=None: texts)
        # Its optimisation runs no forward pass (it decodes cached residuals): skip its steps.
        monkeypatch.setattr(tuned, "_fit", lambda *args: [0.0])


@pytest.mark.parametrize("case", CASES)
def test_workload_matches_the_run(case, tiny_dirs, counted, tmp_path, monkeypatch):
    name, arch, fields, bound = CASES[case]
    _small_world(case, monkeypatch)
    store = tmp_path / "store"
    settings = {"model": tiny_dirs(arch), "out": str(tmp_path / "out"), "store": str(store)}
    config = resolve_config(name, None, None, fields | settings)
    estimate = make_plan(name, config, timed=False).estimate
    run_config(name, config)
    predicted = estimate.tokens_forward + estimate.tokens_generated
    if bound is None:
        assert counted["tokens"] == predicted
    else:
        dropped = sum(p["tokens"] for p in estimate.passes if p["pass"].startswith(bound))
        assert estimate.tokens_forward - dropped <= counted["tokens"] <= predicted
    payload, files, n = _shards(store)
    assert payload == estimate.store_bytes
    # Beyond the activations: each shard's header and its prompts' offsets (int64).
    sequences = sum(p["sequences"] for p in estimate.passes)
    assert 0 <= files - payload <= n * 1024 + 8 * (sequences + n)


def test_plan_prints_its_table_and_writes_json_for_pandas(tiny_dirs, tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    out = tmp_path / "plan.json"
    argv = ["plan", "factual-consistency", "--model", tiny_dirs(GEMMA), "--langs", "en,fr"]
    assert main([*argv, "n_per_relation=2", "--no-timing", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for line in ("weights", "activation store", "peak memory", "tokens forward", "passes:"):
        assert line in text, line
    assert "rank: answer tokens:" in text and "generation:" in text
    plan = json.loads(out.read_text())
    rows = pd.json_normalize(plan, record_path="passes", meta=["experiment", "tokens_forward"])
    assert list(rows["pass"])[:2] == ["rank: prompts", "rank: answer tokens"]
    assert rows["tokens"].sum() == plan["tokens_forward"] == rows["tokens_forward"][0]
    assert rows["generated"].sum() == plan["tokens_generated"] > 0
    assert rows["store_bytes"].sum() == plan["store_bytes"]
    assert len(pd.read_json(out)) == len(rows)  # one row per pass, the plan's fields on each


def test_a_run_that_cannot_fit_is_refused_before_its_model_loads(
    tiny_dirs, tmp_path, monkeypatch, capsys
):
    # The run's check and the plan both ask experiments.base for the free memory.
    monkeypatch.setattr(experiments.base, "free_bytes", lambda device="cpu": 1_000_000)

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(experiments.base, "load_model", never)
    argv = ["run", "latent-language", "--model", tiny_dirs(GEMMA), "--langs", "en,fr"]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "needs about" in err and "1 MB are free" in err
    assert not (tmp_path / "latent-language").exists()
    # `polylens plan` shows the same shortfall with the estimate
    assert main(["plan", *argv[1:], "--no-timing"]) == 0
    assert "does not fit" in capsys.readouterr().out


DATA_FIELDS = [
    ("latent-language", "words_dir"),
    ("factual-consistency", "data"),
    ("refusal-direction", "data"),
]


@pytest.mark.parametrize(("name", "field"), DATA_FIELDS)
def test_plan_refuses_unreadable_data_as_the_run_does(name, field, tiny_dirs, tmp_path, capsys):
    bad = tmp_path / "data"
    bad.mkdir()
    (bad / "stray.txt").write_text("not the layout\n", encoding="utf-8")
    argv = ["--model", tiny_dirs(GEMMA), "--langs", "en,fr", f"{field}={bad}"]
    capsys.readouterr()
    assert main(["run", name, "--out", str(tmp_path / "out"), *argv]) == 2
    run_error = capsys.readouterr().err
    assert main(["plan", name, "--no-timing", *argv]) == 2
    assert capsys.readouterr().err == run_error
    assert run_error.startswith("polylens: error: ") and run_error.count("\n") == 1
