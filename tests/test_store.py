"""Unit tier: the activation store (round trip, cache hit, resume, corruption)."""

import json

import pytest
import torch
from tiny import PROMPTS
from tolerance import SAME_MATH, assert_close_to_scale

import interp
from interp import store as store_module
from interp.store import ActivationStore, entry_key

MANY = [f"{p} {i}" for i in range(4) for p in PROMPTS]  # 20 prompts -> 4 shards of 6


def test_round_trip_and_manifest(llama, tmp_path):
    store = ActivationStore(tmp_path, shard_size=6)
    direct = interp.extract(llama, MANY, progress=False)
    stored = interp.extract(llama, MANY, store=store, progress=False)
    assert_close_to_scale(stored.tensor, direct.tensor, SAME_MATH)  # other batches
    key = entry_key(stored.meta)
    manifest = json.loads((tmp_path / key / "manifest.json").read_text())
    assert manifest["model"] == llama.identity
    assert manifest["layers"] == list(range(llama.n_layers))
    assert len(manifest["shards"]) == 4
    assert manifest["polylens_version"] == interp.__version__
    back = store.load(key)
    assert back.prompts == MANY
    assert torch.equal(back.tensor, stored.tensor)


def test_ragged_and_bfloat16_round_trip(llama, tmp_path):
    store = ActivationStore(tmp_path, shard_size=3)
    # One prompt per batch on both paths: the same computation, so bfloat16 rounding (which
    # turns float32 differences of another batch composition into whole-ulp flips) is the same.
    kw = dict(positions="all", dtype="bfloat16", batch_size=1, progress=False)
    direct = interp.extract(llama, PROMPTS, **kw)
    stored = interp.extract(llama, PROMPTS, store=store, **kw)
    assert stored.flat.dtype == torch.bfloat16
    assert torch.equal(stored.offsets, direct.offsets)
    for a, b in zip(stored.per_prompt(), direct.per_prompt()):
        assert torch.equal(a, b)


def test_second_request_is_a_cache_hit(llama, tmp_path, monkeypatch):
    store = ActivationStore(tmp_path, shard_size=6)
    first = interp.extract(llama, MANY, store=store, progress=False)
    monkeypatch.setattr(store_module, "extract_rows", lambda *a, **k: pytest.fail("recomputed"))
    second = interp.extract(llama, MANY, store=store, progress=False)
    assert torch.equal(first.tensor, second.tensor)
    # A different request is a different entry.
    with pytest.raises(pytest.fail.Exception):
        interp.extract(llama, MANY, layers=[1], store=store, progress=False)


def test_resume_after_kill(llama, tmp_path, monkeypatch):
    store = ActivationStore(tmp_path, shard_size=6)
    real = store_module.extract_rows
    calls = []

    def dies_on_third_shard(plan, rows, **kw):
        calls.append(rows.start)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the run were killed
        return real(plan, rows, **kw)

    monkeypatch.setattr(store_module, "extract_rows", dies_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        interp.extract(llama, MANY, store=store, progress=False)
    (entry,) = store.ls()
    assert not entry["complete"]
    calls.clear()
    monkeypatch.setattr(
        store_module, "extract_rows", lambda *a, **k: calls.append(a[1].start) or real(*a, **k)
    )
    resumed = interp.extract(llama, MANY, store=store, progress=False)
    assert calls == [12, 18]  # only the shards the killed run had not finished
    fresh = interp.extract(llama, MANY, progress=False)
    assert_close_to_scale(resumed.tensor, fresh.tensor, SAME_MATH)


def test_torn_shard_is_recomputed(llama, tmp_path):
    store = ActivationStore(tmp_path, shard_size=6)
    acts = interp.extract(llama, MANY, store=store, progress=False)
    entry = tmp_path / entry_key(acts.meta)
    (entry / "manifest.json").unlink()
    (entry / "shard-00001.safetensors").write_bytes(b"\x00garbage")
    again = interp.extract(llama, MANY, store=store, progress=False)
    assert_close_to_scale(again.tensor, acts.tensor, SAME_MATH)


def test_corrupted_shard_detected(llama, tmp_path):
    store = ActivationStore(tmp_path, shard_size=6)
    key = entry_key(interp.extract(llama, MANY, store=store, progress=False).meta)
    shard = tmp_path / key / "shard-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = store.verify(key)
    assert problems == [
        f"shard shard-00002.safetensors of store entry {key} is corrupted (sha256 mismatch)"
    ]
    with pytest.raises(interp.PolylensError, match="corrupted.*polylens cache rm"):
        store.load(key)
    with pytest.raises(interp.PolylensError, match="corrupted"):
        interp.extract(llama, MANY, store=store, progress=False)


def test_ls_and_rm(llama, tmp_path):
    store = ActivationStore(tmp_path)
    acts = interp.extract(llama, PROMPTS, store=store, progress=False)
    (row,) = store.ls()
    assert row["complete"] and row["prompts"] == len(PROMPTS) and row["model"] == llama.name
    store.rm(entry_key(acts.meta))
    assert store.ls() == []
    with pytest.raises(interp.PolylensError, match="no store entry"):
        store.rm("nope")
    with pytest.raises(interp.PolylensError, match="no complete store entry"):
        store.load("nope")
