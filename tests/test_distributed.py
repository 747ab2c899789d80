"""Unit tier: data-parallel extraction into one store, as under torchrun (2 CPU ranks, gloo)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import PROMPTS, save_tiny

import interp
from interp.storage.store import ActivationStore

MANY = [f"{p} {i}" for i in range(5) for p in PROMPTS]  # 25 prompts -> 9 shards of 3

_RANK = """
import sys, torch.distributed as dist
import interp
from interp.storage.store import ActivationStore
dist.init_process_group("gloo")  # env:// as torchrun sets it: RANK, WORLD_SIZE, MASTER_*
model_dir, root, prompts = sys.argv[1], sys.argv[2], sys.argv[3].split("|")
store = ActivationStore(root, shard_size=3)
acts = interp.extract(interp.load_model(model_dir), prompts, store=store, progress=False)
assert acts.tensor.shape[0] == len(prompts)
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(model_dir: Path, root: Path, world: int) -> None:
    port, root_dir = _free_port(), str(Path(__file__).parents[1])
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "PYTHONPATH": os.pathsep.join(p for p in (root_dir, os.environ.get("PYTHONPATH")) if p),
            "CUDA_VISIBLE_DEVICES": "",  # CPU ranks: two processes must not share one GPU here
        }
        argv = [sys.executable, "-c", _RANK, str(model_dir), str(root), "|".join(MANY)]
        procs.append(subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny("llama", tmp_path_factory.mktemp("llama"))


def test_two_ranks_equal_one_process(model_dir, tmp_path):
    _run_ranks(model_dir, tmp_path / "parallel", world=2)
    store = ActivationStore(tmp_path / "parallel", shard_size=3)
    (row,) = store.ls()
    assert row["complete"] and store.verify(row["key"]) == []
    model = interp.load_model(str(model_dir), device="cpu")
    single = interp.extract(
        model, MANY, store=ActivationStore(tmp_path / "single", shard_size=3), progress=False
    )
    # the same shards, so the same batches: equal, not just close
    assert torch.equal(store.load(row["key"]).tensor, single.tensor)


def test_a_killed_ranks_shards_are_redone(model_dir, tmp_path):
    root = tmp_path / "store"
    _run_ranks(model_dir, root, world=2)
    store = ActivationStore(root, shard_size=3)
    (row,) = store.ls()
    entry = root / row["key"]
    # As if rank 1 had died: its shards (odd ones) and the manifest never reached the disk.
    (entry / "manifest.json").unlink()
    for shard in sorted(entry.glob("shard-*.safetensors"))[1::2]:
        shard.unlink()
        Path(f"{shard}.sha256").unlink()
    _run_ranks(model_dir, root, world=2)
    (row,) = store.ls()
    assert row["complete"] and store.verify(row["key"]) == []
    assert len(list(entry.glob("shard-*.safetensors"))) == 9
