"""Unit tier: analyses read stored activations a chunk of layers at a time, never the whole set.

The memory test runs the analyses in a subprocess (so that the limit binds it, not pytest) that
caps its own data segment (``RLIMIT_DATA``: heap and private writable mappings, which is what a
tensor takes, and a memory-mapped shard while it is open; unlike ``RLIMIT_AS`` it ignores the
address space torch reserves and never touches) at its size after imports plus ``BUDGET``. The
subprocess first shows that the cap binds: reading the whole set, or computing the metrics on
every layer at once, fails. Then it runs the mid-layer alignment metrics and the logit lens on
a store entry of more than twice ``BUDGET``, written by the store's own writer and checked by
its own sha256 verification; their numbers must equal those of the same analyses run here,
unlimited, on the set held in memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from tiny import tiny_tokenizer
from tolerance import SAME_MATH, assert_close_to_scale
from transformers import AutoModelForCausalLM, LlamaConfig

import interp
from interp.analysis import similarity as sim
from interp.extract import prompts_hash
from interp.lens import apply_lens
from interp.model.models import load_model
from interp.storage.activations import Activations
from interp.storage.provenance import provenance
from interp.storage.store import ActivationStore, entry_key
from probes.controls import control_task
from probes.evaluate import by_layer_chunks, cross_validate
from probes.linear import fit_mass_mean

BUDGET = 160 * 2**20
"""Bytes the subprocess may allocate beyond what it holds after its imports."""
SET = 336 * 2**20
"""Bytes of the stored activation set: 2.1 x ``BUDGET``."""
D_MODEL, ITEMS, LANGS = 4096, 16, ("en", "fr")
PROMPTS = [f"{lang} sentence {i}" for lang in LANGS for i in range(ITEMS)]
LAYERS = SET // (len(PROMPTS) * D_MODEL * 4)  # 672 layers of [32, 4096] float32
SHARD_SIZE = 2  # 16 shards of 21 MiB: one is mapped at a time while it is read
K = 2  # the ratio margin's neighbours (fewer than the 16 sentences per language)

_CHILD = """
import json, re, resource, sys
import torch
from interp.analysis import similarity as sim
from interp.lens import apply_lens
from interp.model.models import load_model
from interp.storage.store import ActivationStore

model_dir, root, key, budget, out = sys.argv[1:6]
langs, k = json.loads(sys.argv[6]), int(sys.argv[7])
model = load_model(model_dir)
store = ActivationStore(root)

def status(field):
    return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) << 10

torch.ones(64, 64) @ torch.ones(64, 64)  # start the BLAS threads (their stacks count) first
base = status("VmData")
limit = base + int(budget)
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
report = {"base": base, "limit": limit}
acts = store.load(key)  # sha256 of every shard, streamed
report["lazy"] = not acts.in_memory
feats = sim.ParallelActivations(acts, langs)
for name, whole in (
    ("tensor", lambda: acts.tensor),
    ("all_layers_at_once", lambda: sim.pair_metrics(feats.features(), k=k)),
):
    try:
        whole()
        report[name] = "read"
    except (RuntimeError, MemoryError) as e:
        report[name] = str(e).splitlines()[-1]
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # peak RSS from here on
    rss = status("VmRSS")
except OSError:
    rss = None
metrics = sim.alignment_metrics(feats, k=k)
lens = apply_lens(model, acts, top_k=3)
report["rss_growth"] = None if rss is None else status("VmHWM") - rss
torch.save({"metrics": metrics, "lens": lens}, out)
print(json.dumps(report))
"""


def _wide_model(directory: Path) -> Path:
    """One Llama block with a 4096-wide residual, a 16-token head and 16-wide attention.

    The lens then costs little per value decoded, and the model little memory.
    """
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=D_MODEL,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=16,
        vocab_size=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return directory


def _write_entry(store: ActivationStore, model) -> str:
    """A complete entry of random activations, written shard by shard by the store's writer."""
    meta = provenance(
        model.identity,
        prompts_hash=prompts_hash(PROMPTS),
        n_prompts=len(PROMPTS),
        layers=list(range(LAYERS)),
        positions="last",
        dtype="float32",
        d_model=D_MODEL,
    )
    key = entry_key(meta)
    store.begin_entry(key, PROMPTS)
    gen = torch.Generator().manual_seed(0)
    for start, stop in store.shard_ranges(len(PROMPTS)):
        rows = torch.randn(stop - start, LAYERS, D_MODEL, generator=gen)
        store.write_shard(key, start, rows, torch.arange(stop - start + 1))
    store.finish_entry(key, meta)
    return key


def _child(model_dir: Path, root: Path, key: str, out: Path) -> dict:
    path = [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    argv = [sys.executable, "-c", _CHILD, str(model_dir), str(root), key, str(BUDGET), str(out)]
    argv += [json.dumps(list(LANGS)), str(K)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA and /proc: Linux")
def test_a_set_twice_the_memory_limit_is_analysed_layer_by_layer(tmp_path):
    assert LAYERS * len(PROMPTS) * D_MODEL * 4 >= 2 * BUDGET
    model_dir = _wide_model(tmp_path / "model")
    model = load_model(str(model_dir))
    store = ActivationStore(tmp_path / "store", shard_size=SHARD_SIZE)
    key = _write_entry(store, model)
    stored = sum(p.stat().st_size for p in (tmp_path / "store" / key).glob("shard-*"))
    assert stored >= 2 * BUDGET

    report = _child(model_dir, tmp_path / "store", key, tmp_path / "limited.pt")
    assert report["lazy"]
    # The limit binds: the whole set, or every layer's metrics at once, cannot be computed.
    for whole in ("tensor", "all_layers_at_once"):
        assert "can't allocate memory" in report[whole], report
    if report["rss_growth"] is not None:  # resident peak over the analyses, mapped shards too
        assert report["rss_growth"] < BUDGET, report
    mib = {k: round((v or 0) / 2**20) for k, v in report.items() if k in ("base", "rss_growth")}
    print(
        f"set {stored / 2**20:.0f} MiB; limit: {BUDGET / 2**20:.0f} MiB over {mib['base']} MiB "
        f"after imports; resident peak growth {mib['rss_growth']} MiB"
    )
    limited = torch.load(tmp_path / "limited.pt", weights_only=False)

    # Unlimited, here: the same analyses on the set held in memory.
    acts = store.load(key)
    held = Activations(acts.tensor, acts.offsets, acts.layers, acts.prompts, acts.meta)
    metrics = sim.alignment_metrics(sim.ParallelActivations(held, list(LANGS)), k=K)
    lens = apply_lens(model, held, top_k=3)
    for centring, values in metrics.items():
        for name, v in values.items():
            assert v.shape == (LAYERS, len(LANGS), len(LANGS))
            assert_close_to_scale(limited["metrics"][centring][name], v, SAME_MATH)
    assert torch.equal(limited["lens"].top_ids, lens.top_ids)
    assert_close_to_scale(limited["lens"].top_logprobs, lens.top_logprobs, SAME_MATH)
    assert_close_to_scale(limited["lens"].entropy, lens.entropy, SAME_MATH)


# -- the lazy set itself, and the per-layer analyses on small sets ---------------------------
MANY = [f"{p} {i}" for i in range(3) for p in ("The capital of France is", "La capitale", "x")]


def test_a_loaded_entry_reads_only_what_is_asked(llama, tmp_path):
    store = ActivationStore(tmp_path, shard_size=4)
    direct = interp.extract(llama, MANY, progress=False)
    acts = interp.extract(llama, MANY, store=store, progress=False)
    assert not acts.in_memory
    assert acts.shape == direct.flat.shape and acts.dtype == direct.flat.dtype
    for layer in acts.layers:
        assert_close_to_scale(acts.layer(layer), direct.layer(layer), SAME_MATH)
    assert not acts.in_memory  # layer by layer: nothing kept
    chunks = list(acts.layer_chunks(budget=1))  # one layer per chunk, whatever the budget
    assert [span.stop - span.start for span, _ in chunks] == [1] * llama.n_layers
    assert_close_to_scale(torch.cat([x for _, x in chunks], 1), direct.tensor, SAME_MATH)
    half = acts.to("cpu", torch.float16)
    assert not half.in_memory and half.layer(1).dtype == torch.float16
    assert_close_to_scale(acts.tensor, direct.tensor, SAME_MATH)
    assert acts.in_memory  # .tensor reads everything once and keeps it


def test_a_shard_changed_after_loading_is_refused_unless_it_holds_the_same_bytes(llama, tmp_path):
    store = ActivationStore(tmp_path, shard_size=4)
    key = entry_key(interp.extract(llama, MANY, store=store, progress=False).meta)
    acts = store.load(key)
    shard = tmp_path / key / "shard-00001.safetensors"
    same = shard.read_bytes()
    shard.unlink()
    shard.write_bytes(same)  # another inode, the same bytes (an identical extraction)
    first = acts.layer(1)
    data = bytearray(same)
    data[-5] ^= 0xFF
    stamp = shard.stat().st_mtime_ns
    shard.write_bytes(bytes(data))
    # A kernel that stamps times at clock-tick resolution can give the rewrite the same time.
    os.utime(shard, ns=(stamp + 1_000_000, stamp + 1_000_000))
    with pytest.raises(interp.PolylensError, match="changed on disk.*load it again"):
        acts.layer(1)
    shard.write_bytes(same)
    assert torch.equal(store.load(key).layer(1), first)


def test_alignment_metrics_by_layer_chunks_equal_every_layer_at_once(llama, tmp_path):
    sentences = {
        "en": ["The capital of France is Paris.", "x y", "The capital"],
        "fr": ["La capitale de la France est Paris.", "x", "La capitale"],
    }
    store = ActivationStore(tmp_path)
    feats = sim.parallel_activations(llama, sentences, pooling="mean", store=store)
    assert feats.first is not None  # the tiny tokenizer's BOS is left out of the mean
    chunked = sim.alignment_metrics(feats, k=1, read_budget=1)
    whole = sim.parallel_features(llama, sentences, pooling="mean", store=store)
    raw = sim.pair_metrics(whole, k=1)
    centred = sim.cosine_metrics(sim.center(whole), k=1)
    for name, v in raw.items():
        assert_close_to_scale(chunked["raw"][name], v, SAME_MATH)
    for name, v in centred.items():
        assert_close_to_scale(chunked["centred"][name], v, SAME_MATH)


def test_probes_by_layer_chunks_equal_every_layer_at_once(llama, tmp_path):
    acts = interp.extract(llama, MANY, store=ActivationStore(tmp_path), progress=False)
    y = torch.tensor([0, 1, 0, 1, 0, 1, 1, 0, 1])
    groups = ["a"] * len(MANY)
    # The reference from an extraction held in memory: `acts` stays lazy, read in chunks.
    x = interp.extract(llama, MANY, progress=False).tensor.transpose(0, 1).float()
    fit = dict(k=2, fit=fit_mass_mean)
    chunked = by_layer_chunks(partial(cross_validate, y=y, **fit), acts, budget=1)
    for name, v in cross_validate(x, y, **fit).items():
        assert_close_to_scale(chunked[name], v, SAME_MATH)
    chunked = by_layer_chunks(partial(control_task, y=y, groups=groups, **fit), acts, budget=1)
    whole = control_task(x, y, groups, **fit)
    assert_close_to_scale(chunked["selectivity"], whole["selectivity"], SAME_MATH)
    for name, v in whole["control"].items():
        assert_close_to_scale(chunked["control"][name], v, SAME_MATH)
