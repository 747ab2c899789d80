"""Unit tier: the CLI, called in-process with an argument list."""

import pytest
from tiny import PROMPTS, save_tiny

from experiments.cli import main


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(save_tiny("llama", tmp_path_factory.mktemp("tiny-llama")))


def test_help_on_every_command(capsys):
    for argv in (
        ["--help"],
        ["extract", "--help"],
        ["cache", "--help"],
        ["bench", "extract", "--help"],
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        assert "usage: polylens" in capsys.readouterr().out


def test_models_lists_embedded(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "gemma-3-270m" in out and "smollm2-135m-instruct" in out


def test_extract_then_cache_commands(tiny_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n\n", encoding="utf-8")
    out = str(tmp_path / "store")
    argv = ["extract", "--model", tiny_dir, "--prompts", str(prompts), "--out", out]
    assert main(argv + ["--layers", "0,2", "--positions", "mean"]) == 0
    assert f"{len(PROMPTS)} prompts ->" in capsys.readouterr().out
    assert main(["cache", "ls", "--root", out]) == 0
    line = capsys.readouterr().out.strip()
    key = line.split()[0]
    assert "mean" in line and "5 prompts" in line
    assert main(["cache", "verify", "--root", out]) == 0
    assert "verified 1 entries: ok" in capsys.readouterr().out
    assert main(["cache", "rm", key, "--root", out]) == 0
    assert main(["cache", "ls", "--root", out]) == 0
    assert "no entries" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["extract", "--model", "nope", "--prompts", "x.txt"], "prompt file x.txt does not exist"),
        (["extract", "--model", "nope"], "give exactly one of --prompts FILE or --dataset NAME"),
        (["cache", "rm", "--root", "/tmp/none"], "needs a KEY"),
        (["cache", "verify", "abc", "--root", "/tmp/none"], "'abc' is not a store entry key"),
    ],
)
def test_errors_are_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_unknown_model_and_layer(tiny_dir, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    assert main(["extract", "--model", "nope", "--prompts", str(prompts)]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    argv = [
        "extract",
        "--model",
        tiny_dir,
        "--prompts",
        str(prompts),
        "--layers",
        "7",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "layer 7 is out of range" in capsys.readouterr().err
