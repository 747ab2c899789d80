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
from interp.storage.store import ActivationStore, entry_key

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
    before = acts.tensor  # read now: a loaded entry reads its shards when asked
    entry = tmp_path / entry_key(acts.meta)
    (entry / "manifest.json").unlink()
    (entry / "shard-00001.safetensors").write_bytes(b"\x00garbage")
    again = interp.extract(llama, MANY, store=store, progress=False)
    assert_close_to_scale(again.tensor, before, SAME_MATH)


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
from interp.model.models import load_model
from interp.storage.store import ActivationStore
import interp, interp.storage.store as store_module
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


# -- a resumed entry reuses only its own shards, with its own row ranges ----------------------
def _drop_manifest(store, key):
    (store.root / key / "manifest.json").unlink()


def test_resume_with_another_shard_size_keeps_every_row(llama, tmp_path):
    small = ActivationStore(tmp_path, shard_size=6)
    first = interp.extract(llama, MANY, store=small, progress=False)
    before = first.tensor  # read now: the entry's shards are about to be recut
    key = entry_key(first.meta)
    _drop_manifest(small, key)
    # shard-00000 holds rows 0..5; with shard size 16 it would hold 0..15: it must be redone.
    big = ActivationStore(tmp_path, shard_size=16)
    again = interp.extract(llama, MANY, store=big, progress=False)
    assert again.tensor.shape == before.shape == (len(MANY), llama.n_layers, llama.d_model)
    assert_close_to_scale(again.tensor, before, SAME_MATH)
    assert big.verify(key) == []
    # The earlier cut's leftover shards are gone; the manifest names exactly the ones on disk.
    names = sorted(p.name for p in (tmp_path / key).glob("shard-*.safetensors"))
    assert (
        names
        == sorted(big.manifest(key)["shards"])
        == [
            "shard-00000.safetensors",
            "shard-00001.safetensors",
        ]
    )


def test_foreign_shard_in_an_incomplete_entry_is_recomputed(llama, tmp_path):
    store = ActivationStore(tmp_path, shard_size=6)
    en = interp.extract(llama, MANY, store=store, progress=False)
    before = en.tensor  # read now: its shard 0 is about to be replaced
    fr_prompts = [p + " fr" for p in MANY]
    fr = interp.extract(llama, fr_prompts, store=store, progress=False)
    en_key, fr_key = entry_key(en.meta), entry_key(fr.meta)
    _drop_manifest(store, en_key)
    for suffix in ("", ".sha256"):  # the shard and its (valid) checksum, copied together
        name = "shard-00000.safetensors" + suffix
        (tmp_path / en_key / name).write_bytes((tmp_path / fr_key / name).read_bytes())
    again = interp.extract(llama, MANY, store=store, progress=False)
    assert store.verify(en_key) == []
    assert torch.equal(again.tensor, before)
    assert not torch.equal(again.tensor[:6], fr.tensor[:6])


def _reseal(store, key, **changes):
    from interp.storage.files import read_sealed_json, write_sealed_json

    path = store.root / key / "manifest.json"
    manifest = read_sealed_json(path, remedy="")
    write_sealed_json(path, {**manifest, **changes})


def test_verify_finds_shards_that_do_not_cover_the_prompts(llama, tmp_path):
    store = ActivationStore(tmp_path, shard_size=6)
    key = entry_key(interp.extract(llama, MANY, store=store, progress=False).meta)
    shards = store.manifest(key)["shards"]
    # A manifest that lists one shard fewer, consistently sealed: every checksum still matches.
    _reseal(store, key, shards=dict(list(shards.items())[:-1]))
    (problem,) = store.verify(key)
    assert f"hold 18 prompts but the entry has {len(MANY)}" in problem
    assert "polylens cache rm" in problem
    with pytest.raises(interp.PolylensError, match="hold 18 prompts"):
        store.load(key, verify=False)
    # Two shards swapped: the rows add up but not in their order.
    names = list(shards)
    _reseal(
        store,
        key,
        shards={names[1]: shards[names[1]], names[0]: shards[names[0]]}
        | {n: shards[n] for n in names[2:]},
    )
    (problem,) = store.verify(key)
    assert "holds prompts 6..11 where prompts 0.. belong" in problem


def test_verify_finds_a_shard_of_another_entry(llama, tmp_path):
    store = ActivationStore(tmp_path, shard_size=6)
    en_key = entry_key(interp.extract(llama, MANY, store=store, progress=False).meta)
    fr = interp.extract(llama, [p + " fr" for p in MANY], store=store, progress=False)
    fr_key = entry_key(fr.meta)
    name = "shard-00000.safetensors"
    (tmp_path / en_key / name).write_bytes((tmp_path / fr_key / name).read_bytes())
    shards = store.manifest(en_key)["shards"]
    _reseal(store, en_key, shards={**shards, name: store.manifest(fr_key)["shards"][name]})
    (problem,) = store.verify(en_key)
    assert f"holds the activations of entry {fr_key}" in problem


def test_shards_get_the_mode_the_umask_gives(llama, tmp_path):
    import os

    old = os.umask(0o022)
    try:
        store = ActivationStore(tmp_path, shard_size=6)
        key = entry_key(interp.extract(llama, MANY, store=store, progress=False).meta)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / key).iterdir()}
    assert set(modes.values()) == {0o644}, modes


def test_an_unreadable_store_file_is_one_line(llama, tmp_path, monkeypatch):
    import builtins
    from pathlib import Path

    import interp.storage.files as files

    store = ActivationStore(tmp_path, shard_size=6)
    key = entry_key(interp.extract(llama, MANY, store=store, progress=False).meta)
    shard = tmp_path / key / "shard-00001.safetensors"

    def guarded_open(path, *args, **kwargs):
        if Path(path) == shard:
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(files, "open", guarded_open, raising=False)
    with pytest.raises(interp.PolylensError) as e:
        store.load(key)
    assert str(e.value) == (
        f"cannot read {shard}: Permission denied; check its permissions and the disk"
    )
    real_read_bytes = Path.read_bytes
    manifest = tmp_path / key / "manifest.json"

    def guarded_read_bytes(path):
        if path == manifest:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", guarded_read_bytes)
    with pytest.raises(interp.PolylensError, match=f"cannot read {manifest}: Permission denied"):
        store.manifest(key)
    (row,) = store.ls()  # the listing goes on, that entry marked
    assert row["status"] == "corrupt" and "Permission denied" in row["problem"]
