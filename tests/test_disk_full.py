"""Unit tier: a full disk is one line naming the file and the space it needed, nothing left behind.

The real case mounts a small tmpfs (root with mount rights only, else it skips); the portable
case makes the writer fail as the OS does.
"""

import errno
import os
import subprocess

import pytest
import torch
from tiny import save_tiny

import interp.storage.files as files
from experiments.cli import main
from interp.storage.files import NoSpaceError, atomic_write_bytes, save_safetensors


@pytest.fixture
def full_disk(tmp_path):
    """A 2 MB tmpfs filled to its last few kilobytes."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)])
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (mount / "ballast").write_bytes(b"\0" * (2 * 1024 * 1024 - 16 * 1024))
        yield mount
    finally:
        subprocess.run(["umount", str(mount)])


def _left(directory):
    return sorted(p.name for p in directory.iterdir() if p.name != "ballast")


def test_full_disk_is_no_space_error_and_leaves_nothing(full_disk):
    big = torch.zeros(256, 1024)  # 1 MB: cannot fit in the few KB left
    with pytest.raises(NoSpaceError) as e:
        save_safetensors(full_disk / "acts.safetensors", {"acts": big})
    message = str(e.value)
    assert "\n" not in message
    assert f"no space left on device while writing {full_disk / 'acts.safetensors'}" in message
    assert "1.0 MB needed" in message and "MB free" in message
    with pytest.raises(NoSpaceError, match="0.5 MB needed"):
        atomic_write_bytes(full_disk / "record.json", b"x" * 500_000)
    assert _left(full_disk) == []


def test_extract_on_a_full_disk_is_one_line(full_disk, tmp_path, capsys):
    model = save_tiny("llama", tmp_path / "tiny")
    store = full_disk / "store"
    argv = ["extract", "--model", str(model), "--dataset", "words", "--langs", "en"]
    assert main([*argv, "--layers", "all", "--out", str(store)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.rsplit("\r", 1)[-1].splitlines()[-1]  # after the progress bars
    assert last.startswith("polylens: error: no space left on device while writing ")
    # Only the entry's directory and its prompts list (which fitted) are left: no partial shard.
    (entry,) = store.iterdir()
    assert not [p for p in entry.iterdir() if "safetensors" in p.name], list(entry.iterdir())


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        files.SafetensorError(
            "Error while serializing: IoError(No space left on device (os error 28))"
        ),
    ],
    ids=["oserror", "safetensors"],
)
def test_no_space_as_the_writers_report_it(tmp_path, monkeypatch, failure):
    def fails(*args, **kwargs):
        raise failure

    monkeypatch.setattr(files, "save_file", fails)
    with pytest.raises(NoSpaceError, match="while writing .*shard.safetensors; 0.0 MB needed"):
        save_safetensors(tmp_path / "shard.safetensors", {"a": torch.zeros(3)})
    assert list(tmp_path.iterdir()) == []
    # Any other failure is not taken for a full disk.
    monkeypatch.setattr(
        files, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError(5, "EIO"))
    )
    with pytest.raises(OSError, match="EIO"):
        save_safetensors(tmp_path / "shard.safetensors", {"a": torch.zeros(3)})
