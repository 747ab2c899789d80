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
from typing import ClassVar, Literal

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
from interp.model.dtypes import dtype_name
from interp.model.footprint import (
    format_bytes,
    free_bytes,
    model_shape,
    placement,
    process_bytes,
)
from interp.model.models import LoadedModel, load_model

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
ENCODER_EXPERIMENTS = (
    "mid-layer-alignment, embedding-geometry, language-neurons or knowledge-boundary"
)
"""The experiments that read an encoder (no next-token logits needed), for its refusals."""


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
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights' compute dtype; auto: the checkpoint's own on a GPU, float32 on a CPU."""
    device_map: str | None = None
    """Spread the model over devices with accelerate (auto, balanced, sequential), not device."""
    max_memory: dict[str, str] | None = None
    """With device_map, the most each device may hold, e.g. {0: 20GiB, 1: 20GiB, cpu: 60GiB}."""
    offload_folder: str | None = None
    """With device_map, the directory where weights that fit nowhere else are offloaded."""

    _ranges: ClassVar[dict[str, Range]] = {"batch_size": at_least(1)}
    """Allowed intervals of numeric fields; subclasses add theirs (see ``experiments.fields``)."""
    needs_next_token: ClassVar[str | None] = None
    """What in the experiment reads next-token logits (``"the logit lens"``); None: nothing. An
    encoder is refused with it as soon as it loads (``check_model``), before any other work."""

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
        check_placement(self)

    def load_model(self) -> LoadedModel:
        """The configured model in the configured dtype and placement, after ``check_model``.

        Refused first, in one line and before any weight is read, when its weights cannot fit
        (``check_fits``). Its identity (name, weights' fingerprint, the dtype it computes in:
        ``dtype: auto`` resolved) is kept as ``self.model_identity``, for ``metrics.json``.
        """
        check_fits(self)
        model = load_model(
            self.model,
            device=self.device,
            dtype=self.dtype,
            device_map=self.device_map,
            max_memory=self.max_memory,
            offload_folder=self.offload_folder,
        )
        self.check_model(model)
        self.model_identity = model.identity  # an attribute, not a field: not in config.yaml
        return model

    def check_model(self, model: LoadedModel) -> None:
        """Refuse a model the run cannot read: an encoder where it needs next-token logits."""
        if self.needs_next_token is not None:
            model.require_next_token(self.needs_next_token, remedy=f"use {ENCODER_EXPERIMENTS}")


def check_fits(config: ExperimentConfig) -> None:
    """Refuse, in one line and before any weight is read, a model that cannot fit in memory.

    From the config alone (``interp.model.footprint``): the weights in the compute dtype plus
    what the process holds already, against the free memory of the device; with a device map,
    weights that accelerate would send to the disk need ``offload_folder``. ``polylens plan``
    adds the experiment's own working set to this.
    """
    device = run_device(config)
    shape = model_shape(config.model, dtype=config.dtype, on_gpu=on_gpu(config))
    if config.device_map is not None:
        disk = placement(shape, config.max_memory).get("disk", 0)
        if disk and config.offload_folder is None:
            raise PolylensError(
                f"{config.model}: {format_bytes(disk)} of weights fit on no device and would go "
                "to the disk; give offload_folder (a directory for them) or more max_memory"
            )
        return
    held = process_bytes() if torch.device(device).type == "cpu" else 0
    need, free = shape.weight_bytes + held, free_for(config, device)
    if need > free:
        dtype = dtype_name(shape.dtype)
        raise PolylensError(
            f"{config.model} needs about {format_bytes(need)} in {dtype} "
            f"({format_bytes(shape.weight_bytes)} of weights) and {format_bytes(free)} are "
            f"free; {remedy(dtype)}"
        )


def run_device(config: ExperimentConfig) -> str:
    """The device a run computes on (with a device map: the CPU, which holds the rest)."""
    if config.device is not None:
        return config.device
    return "cuda" if config.device_map is None and torch.cuda.is_available() else "cpu"


def on_gpu(config: ExperimentConfig) -> bool:
    """Whether a GPU computes the run (what dtype ``auto`` follows)."""
    spread = config.device_map is not None and torch.cuda.is_available()
    return spread or torch.device(run_device(config)).type == "cuda"


def remedy(dtype: str) -> str:
    """What makes a run fit: half precision first, then more devices or the disk."""
    if dtype == "float32":
        return "use dtype: bfloat16 or device_map: auto"
    return "use device_map: auto over more GPUs, or offload_folder for weights on disk"


def free_for(config: ExperimentConfig, device: str) -> int:
    """Memory the run can use: the device's, or with a device map every GPU's and the RAM."""
    if config.device_map is None:
        return free_bytes(device)
    gpus = [free_bytes(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    return sum(gpus) + free_bytes("cpu")


def check_placement(config: ExperimentConfig) -> None:
    """Refuse, before the model loads, placement fields that contradict each other."""
    if config.device_map is not None and config.device is not None:
        raise PolylensError(
            "config fields device and device_map both set; give device for one device, "
            "device_map to spread the model"
        )
    if config.device_map is None:
        for name in ("max_memory", "offload_folder"):
            if getattr(config, name) is not None:
                raise PolylensError(
                    f"config field {name} applies only with device_map; add device_map: auto"
                )


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
