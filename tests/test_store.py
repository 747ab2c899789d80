"""Unit tier: the activation store (round trip, cache hit, resume, corruption).

The shard loop lives in ``interp.extract`` (the store only holds tensors and manifests), so a
test that counts or kills extractions patches ``interp.extract.extract_rows``.
"""

import importlib
import json

import pytest
import torch
from tiny import PROMPTS
from tolerance import SAME_MATH, assert_close_to_scale

import interp
from interp.store import ActivationStore, entry_key

# `interp.extract` is also the name of the function the package exports; this is the module.
extract_module = importlib.import_module("interp.extract")

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
    monkeypatch.setattr(extract_module, "extract_rows", lambda *a, **k: pytest.fail("recomputed"))
    second = interp.extract(llama, MANY, store=store, progress=False)
    assert torch.equal(first.tensor, second.tensor)
    # A different request is a different entry.
    with pytest.raises(pytest.fail.Exception):
        interp.extract(llama, MANY, layers=[1], store=store, progress=False)


def test_resume_after_kill(llama, tmp_path, monkeypatch):
    store = ActivationStore(tmp_path, shard_size=6)
    real = extract_module.extract_rows
    calls = []

    def dies_on_third_shard(plan, rows, **kw):
        calls.append(rows.start)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the run were killed
        return real(plan, rows, **kw)

    monkeypatch.setattr(extract_module, "extract_rows", dies_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        interp.extract(llama, MANY, store=store, progress=False)
    (entry,) = store.ls()
    assert not entry["complete"]
    calls.clear()
    monkeypatch.setattr(
        extract_module, "extract_rows", lambda *a, **k: calls.append(a[1].start) or real(*a, **k)
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
        f"shard-00002.safetensors of store entry {key} is corrupted (sha256 mismatch); "
        f"remove the entry with `polylens cache rm {key} --root {tmp_path}` and extract again"
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
        store.rm("0" * 20)
    with pytest.raises(interp.PolylensError, match="no complete store entry"):
        store.load("0" * 20)


# -- integrity: only entries inside the root, nothing read back unchecked ---------------------
def _flip(path, at=None, n=8):
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if at is None else at
    for i in range(at, at + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("key", ["..", ".", "/abs/path/elsewhere", "../x", "", "A" * 20, "0" * 21])
def test_anything_but_a_key_is_refused(tmp_path, key):
    root = tmp_path / "store"
    (root / ("0" * 20)).mkdir(parents=True)
    sentinel = tmp_path / "precious.txt"
    sentinel.write_text("x")
    store = ActivationStore(root)
    for action in (store.rm, store.verify, store.load, store.manifest):
        with pytest.raises(interp.PolylensError, match="is not a store entry key"):
            action(key)
    assert sentinel.read_text() == "x" and (root / ("0" * 20)).is_dir()


def test_symlinked_entry_is_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("x")
    root = tmp_path / "store"
    root.mkdir()
    key = "ab" * 10
    (root / key).symlink_to(outside, target_is_directory=True)
    store = ActivationStore(root)
    for action in (store.rm, store.verify, store.load):
        with pytest.raises(interp.PolylensError, match="symbolic link"):
            action(key)
    (row,) = store.ls()
    assert row["status"] == "foreign" and not row["complete"]
    assert (outside / "precious.txt").read_text() == "x"


def test_corrupted_shard_without_manifest_is_recomputed(llama, tmp_path, monkeypatch):
    # A clean store of the same shards: the same batches, so equal on any device (not only CPU).
    clean = _clean(llama, tmp_path)
    store = ActivationStore(tmp_path / "store", shard_size=6)
    entry = store.root / entry_key(interp.extract(llama, MANY, store=store, progress=False).meta)
    _flip(entry / "shard-00000.safetensors")  # inside the tensor data: safetensors still opens it
    (entry / "shard-00002.safetensors.sha256").unlink()  # a shard whose checksum was never recorded
    (entry / "manifest.json").unlink()
    real, calls = extract_module.extract_rows, []
    monkeypatch.setattr(
        extract_module, "extract_rows", lambda *a, **k: calls.append(a[1].start) or real(*a, **k)
    )
    again = interp.extract(llama, MANY, store=store, progress=False)
    assert calls == [0, 12]
    assert torch.equal(again.tensor, clean.tensor)
    assert store.verify(entry.name) == []


def test_edited_prompts_are_detected(llama, tmp_path):
    store = ActivationStore(tmp_path)
    key = entry_key(interp.extract(llama, PROMPTS, store=store, progress=False).meta)
    path = tmp_path / key / "prompts.json"
    path.write_text(json.dumps(["edited"] + PROMPTS[1:]), encoding="utf-8")
    (problem,) = store.verify(key)
    assert problem.startswith(f"prompts.json of store entry {key} is corrupted")
    with pytest.raises(interp.PolylensError, match="prompts.json .* corrupted"):
        store.load(key, verify=False)  # the prompts are checked even when shards are not


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[:100]),  # truncated
        lambda p: p.write_text(p.read_text().replace('"n_prompts": 5', '"n_prompts": 6')),
        lambda p: p.write_bytes(b"\xff\xfe not utf-8"),
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "sha256": None})),
    ],
    ids=["truncated", "edited", "binary", "unsealed"],
)
def test_corrupted_manifest_is_that_entry_only(llama, tmp_path, monkeypatch, damage):
    store = ActivationStore(tmp_path)
    bad = entry_key(interp.extract(llama, PROMPTS, store=store, progress=False).meta)
    good = entry_key(interp.extract(llama, PROMPTS, layers=[1], store=store, progress=False).meta)
    damage(tmp_path / bad / "manifest.json")
    rows = {r["key"]: r for r in store.ls()}
    assert rows[good]["status"] == "complete"
    assert rows[bad]["status"] == "corrupt"
    assert f"polylens cache rm {bad} --root {tmp_path}" in rows[bad]["problem"]
    (problem,) = store.verify(bad)
    assert "manifest.json is corrupted" in problem and f"polylens cache rm {bad}" in problem
    assert "\n" not in problem
    assert store.verify(good) == []
    with pytest.raises(interp.PolylensError, match="manifest.json is corrupted"):
        store.load(bad)
    interp.extract(llama, PROMPTS, layers=[2], store=store, progress=False)  # another key works
    fresh = interp.extract(llama, PROMPTS, progress=False)
    # The entry itself is resumed: its shards kept their checksums, so nothing is recomputed.
    monkeypatch.setattr(extract_module, "extract_rows", lambda *a, **k: pytest.fail("recomputed"))
    again = interp.extract(llama, PROMPTS, store=store, progress=False)
    assert torch.equal(again.tensor, fresh.tensor)
    assert store.verify(bad) == []


def test_incomplete_entry_is_not_listed_as_complete(llama, tmp_path, monkeypatch):
    store = ActivationStore(tmp_path, shard_size=6)
    monkeypatch.setattr(extract_module, "extract_rows", lambda *a, **k: _raise(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        interp.extract(llama, MANY, store=store, progress=False)
    (row,) = store.ls()
    (problem,) = store.verify(row["key"])
    assert "is incomplete" in problem
    with pytest.raises(interp.PolylensError, match="complete entries: none$"):
        store.load(row["key"])


def _raise(exc):
    raise exc


# -- real processes: SIGKILL between a shard and its checksum; two writers at once ------------
_WORKER = """
import os, signal, sys
from interp.models import load_model
from interp.store import ActivationStore
import interp, interp.store as store_module
model_dir, root, prompts, die_at = sys.argv[1:3] + [sys.argv[3].split("|"), int(sys.argv[4])]
real, calls = store_module.write_sidecar, []
def write_sidecar(*a, **k):  # SIGKILL once shard number die_at is in place, before its checksum
    calls.append(1)
    if len(calls) == die_at + 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
store_module.write_sidecar = write_sidecar
interp.extract(load_model(model_dir), prompts, store=ActivationStore(root, shard_size=6),
               progress=False)
"""


def _worker(model_dir, root, die_at=-1):
    import os
    import subprocess
    import sys
    from pathlib import Path

    path = [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    argv = [sys.executable, "-c", _WORKER, str(model_dir), str(root), "|".join(MANY), str(die_at)]
    return subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)


def _clean(model, tmp_path):
    """An uninterrupted extraction in the same shards (the same batches: equal on any device)."""
    return interp.extract(
        model, MANY, store=ActivationStore(tmp_path / "clean", shard_size=6), progress=False
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tiny import save_tiny

    return save_tiny("llama", tmp_path_factory.mktemp("llama"))


def test_sigkill_between_shard_and_checksum_resumes_bit_exact(model_dir, tmp_path, monkeypatch):
    import signal

    proc = _worker(model_dir, tmp_path, die_at=1)
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    (row,) = ActivationStore(tmp_path).ls()
    entry = tmp_path / row["key"]
    assert (entry / "shard-00001.safetensors").is_file()  # in place, but no checksum recorded
    assert not (entry / "shard-00001.safetensors.sha256").exists()
    model = interp.load_model(str(model_dir))
    real, calls = extract_module.extract_rows, []
    monkeypatch.setattr(
        extract_module, "extract_rows", lambda *a, **k: calls.append(a[1].start) or real(*a, **k)
    )
    resumed = interp.extract(
        model, MANY, store=ActivationStore(tmp_path, shard_size=6), progress=False
    )
    assert calls == [6, 12, 18]
    assert torch.equal(resumed.tensor, _clean(model, tmp_path).tensor)


def test_two_identical_extractions_at_once_stay_consistent(model_dir, tmp_path):
    procs = [_worker(model_dir, tmp_path) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    store = ActivationStore(tmp_path)
    (row,) = store.ls()
    assert row["complete"] and store.verify(row["key"]) == []
    model = interp.load_model(str(model_dir))
    assert torch.equal(store.load(row["key"]).tensor, _clean(model, tmp_path).tensor)
