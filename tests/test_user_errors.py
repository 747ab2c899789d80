"""Unit tier: every user mistake is one line on stderr and exit code 2, found before a model loads.

Each case builds its bad input under ``tmp_path`` and runs ``experiments.cli.main`` in-process.
Cases marked ``early`` must fail before any model loads: loading one fails the test.
"""

import json
import os

import pytest
import torch
from tiny import save_tiny

import experiments.base
import interp.model.models
from experiments import cli
from experiments.cli import main


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(save_tiny("llama", tmp_path_factory.mktemp("tiny-llama")))


def _file(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def _prompts(tmp_path):
    return _file(tmp_path, "prompts.txt", "hello\n")


def _config(tmp_path, content):
    return ["run", "latent-language", "--config", _file(tmp_path, "c.yaml", content)]


def _model_dir(tmp_path, config_json, weights=True):
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "config.json").write_text(config_json)
    if weights:
        (directory / "model.safetensors").write_bytes(b"x")
    return ["extract", "--model", str(directory), "--prompts", _prompts(tmp_path)]


def _out_dir_holding(tmp_path, name, is_file):
    out = tmp_path / "results"
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    if is_file:
        (out / name).write_text("mine")
    else:
        (out / name).mkdir()
        (out / name / "notes.txt").write_text("mine")
    return ["run", "latent-language", "--out", str(out)]


EXTRACT = ["extract", "--dataset", "words", "--langs", "en"]
POSITIVE = "expected a positive"

# (id, builder(tmp_path) -> argv, expected part of the message, found before any model loads)
CASES = [
    (
        "prompts-not-utf8",
        lambda t: ["extract", "--prompts", _file(t, "p.txt", b"caf\xe9\n")],
        "is not UTF-8 text (byte 0xe9 at offset 3)",
        True,
    ),
    (
        "batch-size-0",
        lambda t: EXTRACT + ["--batch-size", "0"],
        POSITIVE + " integer, got '0'",
        True,
    ),
    ("batch-size-neg", lambda t: EXTRACT + ["--batch-size", "-1"], "got '-1'", True),
    ("batch-size-text", lambda t: EXTRACT + ["--batch-size", "ten"], "got 'ten'", True),
    ("batch-size-missing", lambda t: EXTRACT + ["--batch-size"], "expected one argument", True),
    ("bench-n-prompts", lambda t: ["bench", "extract", "--n-prompts", "0"], POSITIVE, True),
    ("bench-repeats", lambda t: ["bench", "extract", "--repeats", "-3"], POSITIVE, True),
    ("bench-lens-n-prompts", lambda t: ["bench", "lens", "--n-prompts", "0"], POSITIVE, True),
    (
        "bench-probes-n-per-class",
        lambda t: ["bench", "probes", "--n-per-class", "0"],
        POSITIVE,
        True,
    ),
    ("tuned-steps", lambda t: ["tuned-lens", "--steps", "0"], POSITIVE, True),
    ("tuned-tokens-per-step", lambda t: ["tuned-lens", "--tokens-per-step", "0"], POSITIVE, True),
    ("tuned-lr-0", lambda t: ["tuned-lens", "--lr", "0"], POSITIVE + " number, got '0'", True),
    ("tuned-lr-neg", lambda t: ["tuned-lens", "--lr", "-0.001"], POSITIVE + " number", True),
    (
        "device-cuda-no-gpu",
        lambda t: EXTRACT + ["--device", "cuda"],
        "no CUDA GPU is available",
        True,
    ),
    ("device-gpu0", lambda t: EXTRACT + ["--device", "gpu0"], "unknown device 'gpu0'", True),
    ("run-device-gpu0", lambda t: ["run", "latent-language", "--device", "gpu0"], "gpu0", True),
    ("bench-device-cuda", lambda t: ["bench", "lens", "--device", "cuda:0"], "no CUDA GPU", True),
    ("tuned-device", lambda t: ["tuned-lens", "--device", "tpu"], "unknown device 'tpu'", True),
    ("config-device", lambda t: _config(t, "device: gpu0\n"), "unknown device 'gpu0'", True),
    (
        "gguf-not-gguf",
        lambda t: ["extract", "--model", _file(t, "m.gguf", "hello"), "--prompts", _prompts(t)],
        "is not a GGUF file",
        False,
    ),
    ("model-config-empty", lambda t: _model_dir(t, "{}"), "has no model_type", False),
    (
        "model-config-invalid",
        lambda t: _model_dir(t, '{"model_type": '),
        "is not valid JSON",
        False,
    ),
    (
        "model-no-weights",
        lambda t: _model_dir(t, '{"model_type": "llama"}', weights=False),
        "has no weights",
        False,
    ),
    (
        "model-bad-weights",
        lambda t: _model_dir(t, '{"model_type": "llama"}'),
        "could not load the model in",
        False,
    ),
    (
        "extract-out-file",
        lambda t: EXTRACT + ["--out", _file(t, "store", "x")],
        "is an existing file; give a directory",
        True,
    ),
    (
        "extract-out-unwritable",
        lambda t: EXTRACT + ["--out", "/proc/polylens-store"],
        "cannot write in /proc",
        True,
    ),
    (
        "run-out-file",
        lambda t: ["run", "latent-language", "--out", _file(t, "r", "x")],
        "is an existing file",
        True,
    ),
    (
        "run-out-result-is-file",
        lambda t: _out_dir_holding(t, "latent-language", is_file=True),
        "latent-language is an existing file",
        True,
    ),
    (
        "run-out-not-a-result",
        lambda t: _out_dir_holding(t, "latent-language", is_file=False),
        "is not a polylens result (it holds 'notes.txt')",
        True,
    ),
    ("bench-out-dir", lambda t: ["bench", "extract", "--out", str(t)], "is a directory", True),
    ("tuned-out-dir", lambda t: ["tuned-lens", "--out", str(t)], "is a directory", True),
    (
        "bench-out-unwritable",
        lambda t: ["bench", "probes", "--out", "/proc/polylens/b.json"],
        "cannot write in /proc",
        True,
    ),
    (
        "config-n-words-text",
        lambda t: _config(t, "n_words: ten\n"),
        "config field n_words = 'ten' is not valid: expected an integer >= 1",
        True,
    ),
    (
        "config-bootstrap-neg",
        lambda t: _config(t, "bootstrap: -5\n"),
        "config field bootstrap = -5 is not valid: expected an integer >= 1",
        True,
    ),
    ("config-bool-as-int", lambda t: _config(t, "n_words: true\n"), "n_words = True", True),
    ("config-not-yaml", lambda t: _config(t, "n_words: [1, 2\n"), "is not valid YAML", True),
    ("config-binary", lambda t: _config(t, b"\x89PNG\r\n\x1a\n\xff"), "is not UTF-8 text", True),
    ("config-nul", lambda t: _config(t, "\x00\x01"), "is not valid YAML", True),
    ("config-list", lambda t: _config(t, "- 1\n- 2\n"), "holds a list, not a mapping", True),
    ("config-scalar", lambda t: _config(t, "hello\n"), "holds a str, not a mapping", True),
    ("config-unknown-key", lambda t: _config(t, "n_wordz: 3\n"), "unknown config key", True),
    ("config-missing", lambda t: ["run", "latent-language", "--config", "nope.yaml"], "nope", True),
    ("config-lens", lambda t: _config(t, "lens: magic\n"), "expected one of 'logit'", True),
    ("config-langs", lambda t: _config(t, "langs: 5\n"), "expected a list of strings", True),
    (
        "config-threshold",
        lambda t: [
            "run",
            "translation-barrier",
            "--config",
            _file(t, "c.yaml", "prob_threshold: 2\n"),
        ],
        "prob_threshold = 2 is not valid: expected a number in (0, 1]",
        True,
    ),
    (
        "config-folds",
        lambda t: ["run", "knowledge-boundary", "--config", _file(t, "c.yaml", "folds: 1\n")],
        "folds = 1 is not valid: expected an integer >= 2",
        True,
    ),
    ("unknown-experiment", lambda t: ["run", "nope"], "unknown experiment 'nope'", True),
    ("no-command", lambda t: [], "the following arguments are required: command", True),
]


@pytest.mark.parametrize(
    ("builder", "message", "early"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_mistake_is_one_line_exit_2(builder, message, early, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if early:
        monkeypatch.setattr(interp.model.models, "load_model", _refuse)
        monkeypatch.setattr(experiments.base, "load_model", _refuse)
    argv = builder(tmp_path)
    assert_mistake(argv, message, tmp_path, capsys)


def assert_mistake(argv, message, tmp_path, capsys):
    """``main(argv)`` exits 2 with one ``polylens: error:`` line holding ``message``.

    Nothing is written under ``tmp_path``: no lone config.yaml, no half result (its
    ``.partial-`` directory is gone), no store entry.
    """
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("polylens: error: "), err
    assert message in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def _refuse(*args, **kwargs):
    raise AssertionError("a model was loaded before the mistake was reported")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_out(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(EXTRACT + ["--out", str(locked / "store")]) == 2
        assert main(["run", "latent-language", "--out", str(locked)]) == 2
    finally:
        locked.chmod(0o755)
    err = capsys.readouterr().err
    assert err.count("cannot write in") == 2 and "Traceback" not in err


def test_ctrl_c_is_one_line_exit_130(monkeypatch, capsys):
    def interrupted(args):
        print("working...")
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_models", interrupted)
    assert main(["models"]) == 130
    captured = capsys.readouterr()
    assert captured.err == "polylens: interrupted\n"


def test_run_help_lists_every_registered_experiment(capsys):
    from experiments import EXPERIMENTS, _load_all

    _load_all()
    with pytest.raises(SystemExit) as e:
        main(["run", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert len(EXPERIMENTS) >= 3
    for name, experiment in EXPERIMENTS.items():
        assert name in out and experiment.description in out


def test_prompts_file_still_reads_utf8(tiny_dir, tmp_path, capsys):
    prompts = _file(tmp_path, "p.txt", "café\n法国\n")
    out = tmp_path / "deep" / "store"
    assert main(["extract", "--model", tiny_dir, "--prompts", prompts, "--out", str(out)]) == 0
    assert "2 prompts ->" in capsys.readouterr().out


def test_model_dir_checks_accept_a_real_model(tiny_dir):
    config = json.loads((interp.model.models.Path(tiny_dir) / "config.json").read_text())
    assert config["model_type"] == "llama"
    interp.model.models._check_model_dir(interp.model.models.Path(tiny_dir))
