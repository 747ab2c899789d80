"""Unit tier: `polylens cache` touches only entries inside its root and reports damage per entry."""

import re

import pytest
from tiny import PROMPTS, save_tiny

from experiments.cli import main

KEY = "0123456789abcdef0123"


def one_error_line(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """sb/precious.txt, sb/x/keep.txt, sb/store/KEY/keep.txt, other/keep.txt, outside/keep.txt."""
    monkeypatch.chdir(tmp_path)
    sentinels = [
        tmp_path / "sb" / "precious.txt",
        tmp_path / "sb" / "x" / "keep.txt",
        tmp_path / "sb" / "store" / KEY / "keep.txt",
        tmp_path / "other" / "keep.txt",
        tmp_path / "outside" / "keep.txt",
    ]
    for path in sentinels:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    (tmp_path / "sb" / "store" / ("ab" * 10)).symlink_to(tmp_path / "outside")
    return tmp_path, sentinels


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("..", "'..' is not a store entry key"),
        (".", "'.' is not a store entry key"),
        ("{tmp}/other", "is not a store entry key"),
        ("../x", "'../x' is not a store entry key"),
        ("ab" * 10, "is a symbolic link, not a store entry"),
    ],
    ids=["dotdot", "dot", "absolute", "dotdot-x", "symlink"],
)
def test_cache_rm_refuses_anything_outside_the_root(tree, capsys, target, message):
    tmp, sentinels = tree
    argv = ["cache", "rm", target.format(tmp=tmp), "--root", "sb/store"]
    assert main(argv) == 2
    one_error_line(capsys, message)
    assert all(path.read_text() == "x" for path in sentinels)


def test_cache_rm_of_a_key_removes_that_entry_only(tree, capsys):
    tmp, sentinels = tree
    assert main(["cache", "rm", KEY, "--root", "sb/store"]) == 0
    assert not (tmp / "sb" / "store" / KEY).exists()
    assert all(path.read_text() == "x" for path in sentinels if KEY not in str(path))


@pytest.fixture(scope="module")
def store_with_two_entries(tmp_path_factory):
    """A store holding two complete entries (layers 0,2 and layer 1) of a tiny model."""
    tmp = tmp_path_factory.mktemp("two-entries")
    model = str(save_tiny("llama", tmp / "model"))
    prompts = tmp / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    root = tmp / "store"
    for layers in ("0,2", "1"):
        argv = ["extract", "--model", model, "--prompts", str(prompts), "--out", str(root)]
        assert main(argv + ["--layers", layers]) == 0
    return model, prompts, root


def _keys(root):
    return sorted(p.name for p in root.iterdir())


def test_truncated_manifest_is_that_entry_only(store_with_two_entries, tmp_path, capsys):
    import shutil

    model, prompts, src = store_with_two_entries
    root = tmp_path / "store"
    shutil.copytree(src, root)
    bad, good = _keys(root)
    manifest = root / bad / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])
    capsys.readouterr()

    assert main(["cache", "ls", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^{good}  \S+ +5 prompts", out, re.M)
    rm = f"polylens cache rm {bad} --root {root}"
    assert re.search(rf"^{bad}  corrupt: .*manifest.json is corrupted.*{re.escape(rm)}", out, re.M)

    with pytest.raises(SystemExit) as e:
        main(["cache", "verify", "--root", str(root)])
    assert e.value.code == 1
    out = capsys.readouterr().out
    assert rm in out and "verified 2 entries: 1 problems" in out
    assert "JSONDecodeError" not in out

    argv = ["extract", "--model", model, "--prompts", str(prompts), "--out", str(root)]
    assert main(argv + ["--layers", "2"]) == 0  # a new extraction of another key
    capsys.readouterr()
    assert main(rm.split()[1:]) == 0  # the command the report gave removes the entry
    assert bad not in _keys(root) and good in _keys(root)


def test_verify_a_directory_mentions_root(store_with_two_entries, capsys):
    _, _, root = store_with_two_entries
    assert main(["cache", "verify", str(root)]) == 2
    one_error_line(capsys, f"polylens cache verify --root {root}")
    key = _keys(root)[0]
    assert main(["cache", "verify", str(root / key)]) == 2
    one_error_line(capsys, f"polylens cache verify {key} --root {root}")


def test_verify_incomplete_entry(tmp_path, capsys):
    (tmp_path / KEY).mkdir()
    with pytest.raises(SystemExit) as e:
        main(["cache", "verify", KEY, "--root", str(tmp_path)])
    assert e.value.code == 1
    out = capsys.readouterr().out
    assert f"store entry {KEY} is incomplete" in out and "verified 1 entries: 1 problems" in out
    assert "complete entries" not in out


def test_verify_unknown_key_is_one_line(tmp_path, capsys):
    assert main(["cache", "verify", KEY, "--root", str(tmp_path)]) == 2
    one_error_line(capsys, f"no store entry '{KEY}'")
