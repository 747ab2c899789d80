"""Unit tier: what goes wrong around `polylens run` is one line and leaves nothing half-written.

Duplicate languages and a config whose ``store`` is a file are refused before a model loads; a
full disk while a result is written is one line naming the file, and the unfinished result
directory is gone; a SIGTERM drops it too and exits with 143. Same checks as
``tests/test_user_errors.py``: exit code 2, one line on stderr, nothing written.
"""

from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import matplotlib.figure
import pytest
import torch
from test_user_errors import _config, _file, _refuse, assert_mistake
from tiny import save_tiny
from transformers.utils import logging as hf_logging

import experiments.base
import interp.model.models
from experiments import cli
from experiments.cli import main
from interp.errors import PolylensError

# Experiment modules bind `load_model` as they are imported: import them before any test patches
# it, or a module imported under the patch keeps refusing to load.
experiments._load_all()

ENOSPC = "no space left on device while writing "
TWICE = "'en' is listed twice; give each"
# A config small enough for the tiny model's 320-token vocabulary.
GEOMETRY = "min_tokens: 2\nprobe_tokens: 8\nneighbour_queries: 4\nneighbours: 4\n"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(save_tiny("llama", tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture
def no_progress_bars(monkeypatch):
    """Model loading's progress bars (on stderr) are not the error line."""
    monkeypatch.setenv("TQDM_DISABLE", "1")
    if not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def _full_disk(path=None):
    """A writer that fails as a full disk does (``path``: the file it names, if any)."""

    def write(*args, **kwargs):
        name = path(args) if callable(path) else path
        raise OSError(errno.ENOSPC, "No space left on device", *([name] if name else []))

    return write


def _geometry_on_full_disk(c, owner, attr, path=None, when=None):
    """`polylens run embedding-geometry` on the tiny model with ``owner.attr`` on a full disk.

    With ``when``, only calls whose first argument passes it fail; the others write as usual.
    """
    full, real = _full_disk(path), getattr(owner, attr)

    def write(*args, **kwargs):
        return (full if when is None or when(args[0]) else real)(*args, **kwargs)

    c.patch.setattr(owner, attr, write)
    out = c.tmp / "results"
    out.mkdir()
    config = _file(c.tmp, "geometry.yaml", GEOMETRY)
    return ["run", "embedding-geometry", "--model", c.model, "--config", config, "--out", str(out)]


def _command_raising(c, error):
    def command(args):
        raise error

    c.patch.setattr(cli, "_cmd_models", command)
    return ["models"]


def _chained_enospc():
    """What torch.save and others raise: their own error, caused by the OS's."""
    error = RuntimeError("file write failed")
    error.__cause__ = OSError(errno.ENOSPC, "No space left on device", "/data/store/shard.pt")
    return error


def _store_under_file(c):
    parent = _file(c.tmp, "notes.txt", "x")
    return _config(c.tmp, f"store: {parent}/store\n")


# (id, builder(c) -> argv, expected part of the message, found before any model loads);
# c.tmp: the test's directory, c.patch: monkeypatch, c.model: a tiny model's directory.
CASES = [
    (
        "run-langs-duplicate",
        lambda c: ["run", "latent-language", "--langs", "en,en,fr"],
        "argument --langs: " + TWICE,
        True,
    ),
    (
        "run-langs-empty-entry",
        lambda c: ["run", "latent-language", "--langs", "en,,fr"],
        "argument --langs: 'en,,fr' has an empty entry",
        True,
    ),
    (
        "config-langs-duplicate",
        lambda c: _config(c.tmp, "langs: [en, en, fr]\n"),
        "config field langs = ['en', 'en', 'fr'] is not valid: " + TWICE,
        True,
    ),
    (
        "config-langs-duplicate-text",
        lambda c: _config(c.tmp, "langs: fr,en,fr\n"),
        "'fr' is listed twice",
        True,
    ),
    (
        "extract-langs-duplicate",
        lambda c: ["extract", "--dataset", "words", "--langs", "en,en,fr"],
        "argument --langs: " + TWICE,
        True,
    ),
    (
        "config-store-is-file",
        lambda c: _config(c.tmp, f"store: {_file(c.tmp, 'notes.txt', 'x')}\n"),
        "notes.txt is an existing file, not a directory; give a directory",
        True,
    ),
    (
        "config-store-under-file",
        _store_under_file,
        "notes.txt is a file, not a directory",
        True,
    ),
    (
        "enospc-figure-png",
        lambda c: _geometry_on_full_disk(
            c, matplotlib.figure.Figure, "savefig", lambda a: str(a[1])
        ),
        ENOSPC + "{tmp}/results/embedding-geometry/figures/token_scripts.png; free some space",
        False,
    ),
    (
        "enospc-figure-html",
        lambda c: _geometry_on_full_disk(c, Path, "write_text", when=lambda p: p.suffix == ".html"),
        ENOSPC + "{tmp}/results/embedding-geometry/figures/token_scripts.html; free some space",
        False,
    ),
    (
        "enospc-table-csv",
        lambda c: _geometry_on_full_disk(c, csv.DictWriter, "writerows"),
        ENOSPC + "{tmp}/results/embedding-geometry/tables/token_scripts.csv; free some space",
        False,
    ),
    (
        "enospc-elsewhere-named",
        lambda c: _command_raising(
            c, OSError(errno.ENOSPC, "No space left on device", "/data/x.json")
        ),
        ENOSPC + "/data/x.json; free some space or write elsewhere",
        True,
    ),
    (
        "enospc-elsewhere-unnamed",
        lambda c: _command_raising(c, OSError(errno.ENOSPC, "No space left on device")),
        "no space left on device; free some space or write elsewhere",
        True,
    ),
    (
        "enospc-chained",
        lambda c: _command_raising(c, _chained_enospc()),
        ENOSPC + "/data/store/shard.pt;",
        True,
    ),
]


@pytest.mark.parametrize(
    ("builder", "message", "early"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_run_mistake_is_one_line_exit_2(
    builder, message, early, tiny_dir, tmp_path, monkeypatch, capsys, no_progress_bars
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if early:
        monkeypatch.setattr(interp.model.models, "load_model", _refuse)
        monkeypatch.setattr(experiments.base, "load_model", _refuse)
    argv = builder(SimpleNamespace(tmp=tmp_path, patch=monkeypatch, model=tiny_dir))
    assert_mistake(argv, message.format(tmp=tmp_path), tmp_path, capsys)


def test_duplicate_langs_refused_by_the_config_class():
    from experiments.translation_task import TranslationConfig

    with pytest.raises(interp.PolylensError, match=TWICE):
        TranslationConfig(langs=["en", "en", "fr"])
    assert TranslationConfig(langs=["en", "fr"]).langs == ["en", "fr"]


def test_other_os_errors_are_not_taken_for_a_full_disk(monkeypatch):
    def command(args):
        raise OSError(errno.EIO, "Input/output error", "/data/x")

    monkeypatch.setattr(cli, "_cmd_models", command)
    with pytest.raises(OSError, match="Input/output error"):
        main(["models"])


@pytest.mark.skipif(sys.platform != "linux", reason="mounts a tmpfs")
def test_real_full_disk_leaves_no_partial_result(tiny_dir, tmp_path, capsys, no_progress_bars):
    """A 1 MB tmpfs: plotly.min.js (4.8 MB) does not fit. Skipped where mounting is refused."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        config = _file(tmp_path, "geometry.yaml", GEOMETRY)
        argv = ["run", "embedding-geometry", "--model", tiny_dir, "--config", config]
        code = main([*argv, "--out", str(disk)])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("polylens: error: " + ENOSPC + str(disk)), err
        assert err.count("\n") == 1
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# -- SIGTERM ------------------------------------------------------------------------------------

_SLOW_RUN = """
import sys, time
import experiments
from experiments import Experiment, get_experiment
from experiments.cli import main
from interp.errors import PolylensError
from experiments.results import ResultDir

real = get_experiment("latent-language")

def slow(config):
    ResultDir("latent-language", config)
    print("started", flush=True)
    time.sleep(120)

experiments.EXPERIMENTS["latent-language"] = Experiment(
    real.name, real.config_class, slow, real.description
)
sys.exit(main(["run", "latent-language", "--out", sys.argv[1]]))
"""


def test_sigterm_drops_the_partial_result_and_exits_143(tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "POLYLENS_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_SLOW_RUN), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert line == "started\n", line + proc.stderr.read()
        assert any(p.name.startswith(".latent-language.partial-") for p in out.iterdir())
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert err.splitlines()[-1] == "polylens: terminated"
    assert list(out.iterdir()) == []


def test_sigterm_in_process_and_the_previous_handler_comes_back(monkeypatch, capsys):
    seen = []

    def previous(signum, frame):
        seen.append(signum)

    def command(args):
        print("working...")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here
        raise AssertionError("SIGTERM did not stop the command")

    old = signal.signal(signal.SIGTERM, previous)
    try:
        monkeypatch.setattr(cli, "_cmd_models", command)
        assert main(["models"]) == 143
        assert capsys.readouterr().err == "polylens: terminated\n"
        assert signal.getsignal(signal.SIGTERM) is previous
        monkeypatch.setattr(cli, "_cmd_models", lambda args: None)
        assert main(["models"]) == 0
        assert signal.getsignal(signal.SIGTERM) is previous
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, old)


@pytest.mark.parametrize(
    ("field", "yaml"),
    [("relations", "relations: [capital, capital]\n"), ("layers", "layers: [3, 1, 3]\n")],
)
def test_any_list_field_with_a_repeat_is_refused(field, yaml):
    import yaml as pyyaml

    from experiments.linear_shortcut import ShortcutConfig

    with pytest.raises(PolylensError, match=f"config field {field} = .* is listed twice"):
        ShortcutConfig(**pyyaml.safe_load(yaml))


def test_a_store_under_home_is_expanded(tmp_path, monkeypatch):
    from interp.storage.store import ActivationStore

    monkeypatch.setenv("HOME", str(tmp_path))
    assert ActivationStore("~/acts").root == tmp_path / "acts"
