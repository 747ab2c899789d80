"""Experiments: one module each, a config dataclass and ``run(config) -> Path``.

``EXPERIMENTS`` is an explicit registry that refuses duplicates. It fills itself: the first
lookup imports every module of this package, and a module that defines an experiment registers
it with ``@register`` as it is imported (no hand-written list to keep in step). ``run_experiment``
resolves a config from the experiment's YAML in ``experiments/configs/``, an optional user YAML
and overrides, in that order.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from experiments.base import ExperimentConfig, load_config
from experiments.results import check_result_target, discard_uncommitted, run_clock
from interp.errors import PolylensError
from interp.model.footprint import Workload
from interp.model.models import LoadedModel


@dataclass(frozen=True)
class Experiment:
    """A registered experiment."""

    name: str
    config_class: type[ExperimentConfig]
    run: Callable[[ExperimentConfig], Path]
    description: str
    workload: Callable[[ExperimentConfig, LoadedModel], Workload] | None = None
    """What a run asks of the model, from the config and a model on the meta device (its
    tokenizer and layers, no weights): ``polylens plan`` and the check before every run."""


EXPERIMENTS: dict[str, Experiment] = {}


def register(
    name: str,
    config_class: type[ExperimentConfig],
    description: str,
    *,
    workload: Callable[[ExperimentConfig, LoadedModel], Workload] | None = None,
) -> Callable:
    """Decorator adding ``run`` to the registry under ``name`` (a name can be taken once)."""

    def add(run: Callable[[ExperimentConfig], Path]) -> Callable[[ExperimentConfig], Path]:
        if name in EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is already registered")
        EXPERIMENTS[name] = Experiment(name, config_class, run, description, workload)
        return run

    return add


def _load_all() -> None:
    """Import every module of the package; each experiment module registers itself."""
    for module in pkgutil.iter_modules(__path__):
        # The CLI is the caller, not an experiment (under `python -m` it is `__main__`).
        if not module.ispkg and module.name != "cli":
            importlib.import_module(f"{__name__}.{module.name}")


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name``, or an error listing the known ones."""
    _load_all()
    if name not in EXPERIMENTS:
        raise PolylensError(f"unknown experiment {name!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    return EXPERIMENTS[name]


def resolve_config(
    name: str,
    config_file: str | Path | None = None,
    overrides: dict | None = None,
    settings: dict | None = None,
) -> ExperimentConfig:
    """The config of ``name``: its YAML defaults, then ``config_file``, then ``overrides`` (where
    ``None`` is "not given"), then ``settings`` (fields set on the command line, ``None`` kept)."""
    experiment = get_experiment(name)
    return load_config(experiment.config_class, name, config_file, overrides or {}, settings)


def run_experiment(
    name: str,
    config_file: str | Path | None = None,
    overrides: dict | None = None,
    settings: dict | None = None,
) -> Path:
    """Resolve the config of ``name`` and run it; returns the result directory.

    The config and the result's place are checked before anything loads; a run that fails or is
    interrupted drops its unfinished result and leaves the previous one as it was.
    """
    return run_config(name, resolve_config(name, config_file, overrides, settings))


def run_config(name: str, config: ExperimentConfig) -> Path:
    """Run ``name`` with a resolved ``config``; returns the result directory."""
    experiment = get_experiment(name)
    check_result_target(name, config.out)
    with run_clock():
        try:
            path = experiment.run(config)
        except BaseException:
            discard_uncommitted()
            raise
    if discard_uncommitted():
        raise RuntimeError(f"experiment {name!r} returned without ResultDir.commit()")
    return path


def registered() -> list[Experiment]:
    """Every registered experiment, in registry order."""
    _load_all()
    return list(EXPERIMENTS.values())


def experiment_list() -> str:
    """One line per registered experiment: its name and what it does."""
    _load_all()
    width = max(map(len, EXPERIMENTS)) + 2
    return "\n".join(f"  {e.name:{width}s}{e.description}" for e in EXPERIMENTS.values())
