"""Unit tier: every config field is validated by type and range when the config is built."""

from pathlib import Path
from typing import Literal

import pytest

from experiments import EXPERIMENTS, _load_all, run_experiment
from experiments.base import ExperimentConfig
from experiments.cross_lingual_patching import PatchingConfig
from experiments.fields import Range, above, at_least, describe
from experiments.knowledge_boundary import BoundaryConfig
from experiments.translation_barrier import BarrierConfig
from experiments.translation_task import TranslationConfig
from interp import PolylensError


def test_every_registered_config_has_a_rule_for_every_field():
    _load_all()
    assert len(EXPERIMENTS) >= 3
    for experiment in EXPERIMENTS.values():
        experiment.config_class()  # describe() raises TypeError for a field type without a rule


@pytest.mark.parametrize(
    ("cls", "values", "message"),
    [
        (
            PatchingConfig,
            {"relations": ["capital"]},
            "config field relations needs at least two relations",
        ),
        (
            TranslationConfig,
            {"n_words": "ten"},
            "n_words = 'ten' is not valid: expected an integer",
        ),
        (
            TranslationConfig,
            {"bootstrap": -5},
            "bootstrap = -5 is not valid: expected an integer >= 1",
        ),
        (TranslationConfig, {"n_demos": 0}, "n_demos = 0"),
        (TranslationConfig, {"top_k": 2.5}, "top_k = 2.5"),
        (
            TranslationConfig,
            {"repetition": "yes"},
            "repetition = 'yes' is not valid: expected true or false",
        ),
        (TranslationConfig, {"memory_budget_mb": 0}, "expected a number > 0"),
        (TranslationConfig, {"lens": "magic"}, "expected one of 'logit', 'tuned'"),
        (
            ExperimentConfig,
            {"batch_size": 0},
            "batch_size = 0 is not valid: expected an integer >= 1",
        ),
        (ExperimentConfig, {"seed": None}, "seed = None is not valid: expected an integer"),
        (ExperimentConfig, {"model": 3}, "model = 3 is not valid: expected a string"),
        (ExperimentConfig, {"store": 3}, "store = 3 is not valid: expected a string or null"),
        (ExperimentConfig, {"langs": ["en", 3]}, "expected a list of strings"),
        (ExperimentConfig, {"device": "gpu0"}, "unknown device 'gpu0'"),
        (BarrierConfig, {"prob_threshold": 0}, "expected a number in (0, 1]"),
        (BarrierConfig, {"exclude_source": 1}, "exclude_source = 1"),
        (BoundaryConfig, {"labels": "mine"}, "expected one of 'construction', 'model'"),
        (BoundaryConfig, {"position": "first"}, "expected one of 'last', 'mean'"),
        (BoundaryConfig, {"folds": 1}, "expected an integer >= 2"),
        (BoundaryConfig, {"C": -1.0}, "C = -1.0 is not valid: expected a number > 0"),
        (BoundaryConfig, {"n_per_class": 3}, "n_per_class must be at least the number of folds"),
    ],
)
def test_bad_field_is_one_line_naming_field_value_and_expectation(cls, values, message):
    with pytest.raises(PolylensError) as e:
        cls(**values)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_values_are_normalised():
    config = TranslationConfig(langs="en,fr", memory_budget_mb=512, top_k=3)
    assert config.langs == ["en", "fr"] and config.memory_budget_mb == 512.0
    assert isinstance(config.memory_budget_mb, float)
    # YAML 1.1 reads 1e-3 as a string; a float field takes it.
    assert BarrierConfig(prob_threshold="1e-3").prob_threshold == 0.001
    assert ExperimentConfig(out=Path("r"), store=None).out == "r"


def test_bad_config_fails_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "c.yaml"
    bad.write_text("bootstrap: -5\n")
    with pytest.raises(PolylensError, match="bootstrap = -5"):
        run_experiment("latent-language", bad, {"out": str(tmp_path / "out")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_describe_and_ranges():
    assert describe(int | None) == "an integer or null"
    assert describe(Literal["a", "b"]) == "one of 'a', 'b'"
    assert str(at_least(1)) == ">= 1" and str(above(0)) == "> 0"
    assert str(Range(0, 1, lo_open=True)) == "in (0, 1]"
    assert 1 in Range(0, 1, lo_open=True) and 0 not in Range(0, 1, lo_open=True)
    with pytest.raises(TypeError, match="no validation rule"):
        describe(dict)
