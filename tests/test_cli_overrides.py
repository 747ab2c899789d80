"""Unit tier: `polylens run NAME --help` lists the experiment's config fields, and config fields
are set on the command line (``field=value``, ``--field value``), validated as a YAML file's are.

No model runs: the experiment's ``run`` is swapped for one that writes only ``config.yaml``, and
loading a model fails the error cases.
"""

import dataclasses
from dataclasses import dataclass

import pytest
import torch
import yaml

import experiments.base
import interp.model.models
from experiments import EXPERIMENTS, _load_all
from experiments.base import ExperimentConfig, ResultDir
from experiments.cli import main
from experiments.fields import fields_help

NAME = "latent-language"


def _help(capsys, name):
    with pytest.raises(SystemExit) as e:
        main(["run", name, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "entry", "doc"),
    [
        (
            "latent-language",
            "  n_words: int = 10  (>= 1)",
            "Test words per (source, target) pair.",
        ),
        (
            "latent-language",
            "  lens: Literal['logit', 'tuned'] = logit",
            "logit or tuned.",
        ),
        (
            "knowledge-boundary",
            "  folds: int = 5  (>= 2)",
            "Cross-validation folds.",
        ),
        (
            "knowledge-boundary",
            "  labels: Literal['construction', 'model'] = model",
            "model (the model's own answer decides) or construction (answerable = known; separable",
        ),
    ],
)
def test_run_name_help_lists_each_field_with_type_default_and_docstring(name, entry, doc, capsys):
    out = _help(capsys, name)
    lines = out.splitlines()
    assert entry in lines, out
    assert lines[lines.index(entry) + 1].strip().startswith(doc)
    assert "  langs: list[str] = [en,fr,de," in out  # a shared field, default from the YAML
    assert "field=value" in out


def test_a_field_without_docstring_shows_type_and_default():
    @dataclass
    class Bare(ExperimentConfig):
        steps: int = 7
        documented: bool = False
        """A documented flag."""

    text = fields_help(Bare, {"steps": 7, "documented": False}).splitlines()
    assert text[text.index("  steps: int = 7") + 1] == "  documented: bool = false"
    assert text[text.index("  documented: bool = false") + 1].strip() == "A documented flag."


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """The configs the latent-language run is called with; the run writes only config.yaml."""
    _load_all()
    configs = []

    def run(config):
        configs.append(config)
        return ResultDir(NAME, config).commit()

    monkeypatch.setitem(EXPERIMENTS, NAME, dataclasses.replace(EXPERIMENTS[NAME], run=run))
    monkeypatch.chdir(tmp_path)
    return configs


def _written(tmp_path):
    return yaml.safe_load((tmp_path / NAME / "config.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "fields",
    [
        ["n_words=3"],
        ["--n-words", "3"],
        ["--n_words", "3"],
        ["--n-words=3"],
        ["n_words=3", "langs=[en,fr]", "lens=tuned"],
    ],
)
def test_a_field_set_on_the_command_line_reaches_the_config(fields, recorded, tmp_path, capsys):
    assert main(["run", NAME, "--out", str(tmp_path), *fields]) == 0
    (config,) = recorded
    assert config.n_words == 3
    assert _written(tmp_path)["n_words"] == 3
    if "lens=tuned" in fields:
        assert (config.lens, config.langs) == ("tuned", ["en", "fr"])


def test_every_syntax_and_value_kind(recorded, tmp_path, capsys):
    argv = ["run", NAME, "--out", str(tmp_path), "--repetition=false", "--drop-collisions"]
    argv += ["--seed", "-1", "memory_budget_mb=1e-3", "demonstrations=per_pair", "--langs=[en,de]"]
    assert main(argv) == 0
    (config,) = recorded
    assert (config.repetition, config.drop_collisions, config.seed) == (False, True, -1)
    assert (config.memory_budget_mb, config.demonstrations) == (0.001, "per_pair")
    assert config.langs == ["en", "de"]


def test_command_line_wins_over_the_config_file(recorded, tmp_path, capsys):
    user = tmp_path / "mine.yaml"
    user.write_text(f"n_words: 5\nn_demos: 2\nstore: {tmp_path / 'store'}\n", encoding="utf-8")
    argv = ["run", NAME, "--config", str(user), "--out", str(tmp_path), "n_words=3", "store=null"]
    assert main(argv) == 0
    written = _written(tmp_path)
    # default < YAML < command line: top_k from the defaults, n_demos from the file, n_words and
    # store (back to null) from the command line.
    assert (written["top_k"], written["n_demos"], written["n_words"]) == (10, 2, 3)
    assert written["store"] is None
    assert recorded[0].n_words == 3


def _refuse(*args, **kwargs):
    raise AssertionError("a model was loaded before the mistake was reported")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (["n_word=3"], "unknown config field 'n_word' for latent-language (did you mean n_words?)"),
        (["--top-kk", "3"], "unknown config field 'top-kk'"),
        (["n_words=0"], "config field n_words = 0 is not valid: expected an integer >= 1"),
        (["--n-words", "ten"], "n_words = 'ten' is not valid: expected an integer >= 1"),
        (["lens=magic"], "config field lens = 'magic' is not valid: expected one of 'logit'"),
        (["langs=[en"], "config field langs = '[en' is not valid YAML"),
        (["--n-words"], "--n-words needs a value: expected an integer"),
        (["stray"], "unexpected argument 'stray' for latent-language"),
    ],
)
def test_a_bad_field_is_one_line_exit_2_before_a_model_loads(
    fields, message, monkeypatch, tmp_path, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(interp.model.models, "load_model", _refuse)
    monkeypatch.setattr(experiments.base, "load_model", _refuse)
    assert main(["run", NAME, "--out", str(tmp_path), *fields]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("polylens: error: "), err
    assert message in err
    assert not (tmp_path / NAME).exists()
    if "unknown" in message:
        assert "known: " in err and "n_words" in err


def test_other_commands_still_refuse_extra_arguments(capsys):
    assert main(["models", "n_words=3"]) == 2
    assert "unrecognized arguments: n_words=3" in capsys.readouterr().err
