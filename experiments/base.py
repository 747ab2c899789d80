"""What every experiment shares: its config base, config loading and its result directory.

A result is a directory: ``config.yaml`` (fully resolved), ``metrics.json``, ``tables/*.csv``,
``figures/*.png`` and ``figures/*.html`` (plotly, self-contained), and ``report.html``, written
atomically by ``ResultDir`` (``experiments/results.py``).
"""

from __future__ import annotations

import difflib
import random
import typing
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import yaml

from experiments.fields import (
    Range,
    at_least,
    describe,
    fields_help,
    parse_value,
    validate_fields,
)
from experiments.results import Figure, ResultDir
from interp.checks import check_device, nearest_existing, read_text_file
from interp.data import DEFAULT_LANGS
from interp.data.languages import check_langs
from interp.errors import PolylensError

__all__ = [
    "CONFIG_DIR",
    "ExperimentConfig",
    "Figure",
    "ResultDir",
    "config_defaults",
    "fields_usage",
    "load_config",
    "parse_overrides",
    "seed_everything",
]

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class ExperimentConfig:
    """Fields every experiment has."""

    model: str = "gemma-3-270m"
    """Embedded model name, local directory, .gguf file or hub id."""
    langs: list[str] = field(default_factory=lambda: list(DEFAULT_LANGS))
    """ISO 639-1 codes of the languages to study."""
    out: str = "results"
    """Parent directory; the run writes ``<out>/<experiment name>/``."""
    seed: int = 0
    """Seed of every sampling step."""
    batch_size: int = 16
    """Prompts per forward pass."""
    device: str | None = None
    """cuda or cpu (default: cuda when available)."""
    store: str | None = None
    """Activation store directory (default: the polylens cache)."""

    _ranges: ClassVar[dict[str, Range]] = {"batch_size": at_least(1)}
    """Allowed intervals of numeric fields; subclasses add theirs (see ``experiments.fields``)."""

    def __post_init__(self) -> None:
        if isinstance(self.langs, str):
            self.langs = self.langs.split(",")
        validate_fields(self)
        self.langs = check_langs(self.langs)  # repeats were refused by validate_fields
        try:
            check_device(self.device)
        except PolylensError as e:
            raise PolylensError(f"config field device: {e}") from None
        if self.store is not None:
            check_store_dir(self.store)


def check_store_dir(store: str) -> None:
    """Refuse an activation store path that can never be a directory (a file, or under one).

    Not a writability check: a read-only store whose entries are complete still serves them.
    """
    path = Path(store)
    what = f"config field store = {store!r}"
    remedy = "give a directory for the activation store (or leave store out: the cache)"
    nearest = nearest_existing(path)
    if not nearest.is_dir():
        kind = "an existing file" if nearest == path else "a file"
        raise PolylensError(f"{what}: {nearest} is {kind}, not a directory; {remedy}")


def load_config(
    cls: type[ExperimentConfig],
    name: str,
    path: str | Path | None,
    overrides: dict,
    settings: dict | None = None,
) -> ExperimentConfig:
    """Defaults from ``configs/<name>.yaml``, then the user's YAML, then overrides, then settings.

    An override of ``None`` means "not given" (an option left out); ``settings`` are fields set
    one by one (``polylens run NAME field=value``), where ``None`` is a value (``store=null``).
    """
    values: dict = {}
    for source in (CONFIG_DIR / f"{name}.yaml", path):
        if source is not None:
            values.update(read_yaml_mapping(source))
    values.update({k: v for k, v in overrides.items() if v is not None})
    values.update(settings or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PolylensError(
            f"unknown config key {unknown[0]!r} for {name}; known: {', '.join(sorted(known))}"
        )
    return cls(**values)


def config_defaults(cls: type[ExperimentConfig], name: str) -> dict:
    """The values a run of ``name`` starts from: the dataclass's, then ``configs/<name>.yaml``."""
    values = {
        f.name: f.default_factory() if f.default_factory is not MISSING else f.default
        for f in fields(cls)
    }
    path = CONFIG_DIR / f"{name}.yaml"
    if path.is_file():
        values.update(read_yaml_mapping(path))
    return values


def fields_usage(cls: type[ExperimentConfig], name: str) -> str:
    """The help's list of the config fields of ``name``: type, default and documentation."""
    return (
        f"config fields of {name}: set them with field=value or --field value (applied after\n"
        f"--config); defaults: the config class's, then experiments/configs/{name}.yaml's\n"
        + fields_help(cls, config_defaults(cls, name))
    )


def parse_overrides(cls: type[ExperimentConfig], name: str, tokens: Sequence[str]) -> dict:
    """Config fields set on the command line: ``field=value``, ``--field value``, ``--field=value``.

    ``-`` and ``_`` are the same in a name; a bool field given as ``--field`` alone is true. Values
    are YAML (``n_words=3``, ``langs=[en,fr]``, ``store=null``); they are validated when the config
    is built. An unknown field is one line naming the close ones and the known ones.
    """
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    values: dict = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        option = token.startswith("--")
        if option:
            key, given, text = token[2:].partition("=")
        elif "=" in token and not token.startswith("-"):
            key, given, text = token.partition("=")
        else:
            raise PolylensError(
                f"unexpected argument {token!r} for {name}: set a config field with field=value "
                f"or --field value (see `polylens run {name} --help`)"
            )
        field_name = key.replace("-", "_")
        if field_name not in known:
            raise PolylensError(_unknown_field(cls, name, key))
        if option and not given:
            following = tokens[i] if i < len(tokens) else None
            flag = following is None or following.startswith("--") or "=" in following
            if hints[field_name] is bool and flag:
                text = "true"
            elif following is None or following.startswith("--"):
                raise PolylensError(
                    f"{token} needs a value: expected {describe(hints[field_name])}"
                )
            else:
                text = following
                i += 1
        values[field_name] = parse_value(field_name, text, hints[field_name])
    return values


def _unknown_field(cls: type[ExperimentConfig], name: str, key: str) -> str:
    known = [f.name for f in fields(cls)]
    close = difflib.get_close_matches(key.replace("-", "_"), known, n=1)
    guess = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown config field {key!r} for {name}{guess}; known: {', '.join(sorted(known))}"


def read_yaml_mapping(path: str | Path) -> dict:
    """The ``field: value`` mapping of a YAML config file (empty file: no fields)."""
    text = read_text_file(path, "config file")
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise PolylensError(f"config file {path} is not valid YAML{where}: {problem}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise PolylensError(
            f"config file {path} holds a {type(values).__name__}, not a mapping; "
            "write one `field: value` per line"
        )
    bad = [k for k in values if not isinstance(k, str)]
    if bad:
        raise PolylensError(f"config file {path} has a non-text key {bad[0]!r}; keys are names")
    return values


def seed_everything(seed: int) -> None:
    """Same config and seed, same numbers."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
