"""``polylens plan``: what a run of an experiment will cost, before any weight is read.

The experiment's config is resolved as ``polylens run`` resolves it, its model is built on the
meta device with its real tokenizer (``interp.model.footprint``), and the experiment's own
``workload`` function states what it will run; the estimate follows from both. Every run
asks ``experiments.base.check_fits`` (the weights alone) before its model loads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from experiments import get_experiment
from experiments.base import ExperimentConfig, free_for, on_gpu, remedy, run_device
from interp.errors import PolylensError
from interp.model.dtypes import dtype_name
from interp.model.footprint import (
    Estimate,
    ModelShape,
    Workload,
    calibrate,
    estimate,
    format_bytes,
    placement,
    planning_model,
)


@dataclass(frozen=True)
class Plan:
    """An experiment's config, its model's shape and the estimate of its run."""

    name: str
    model: str
    dtype: str
    device: str
    shape: ModelShape
    estimate: Estimate
    free_bytes: int
    devices: dict[str, int] | None = None
    """With a device map: bytes of weights per device accelerate would place there."""

    def as_dict(self) -> dict:
        """The plan as JSON-ready values (bytes, tokens, seconds)."""
        return {
            "experiment": self.name,
            "model": self.model,
            "dtype": self.dtype,
            "device": self.device,
            "n_blocks": self.shape.n_blocks,
            "d_model": self.shape.d_model,
            "vocab": self.shape.vocab,
            **{k: v for k, v in asdict(self.estimate).items() if k != "passes"},
            "free_bytes": self.free_bytes,
            "weight_bytes_per_device": self.devices,
            "passes": list(self.estimate.passes),
        }


def make_plan(name: str, config: ExperimentConfig, *, timed: bool = True) -> Plan:
    """The plan of running ``name`` with ``config``; ``timed`` adds this machine's time."""
    experiment = get_experiment(name)
    device = run_device(config)
    model, shape = planning_model(config.model, dtype=config.dtype, on_gpu=on_gpu(config))
    config.check_model(model)  # an encoder is refused as the run refuses it, in one line
    workload = experiment.workload(config, model) if experiment.workload else Workload(())
    timing = calibrate(shape, device) if timed else None
    # On a GPU the peak is the device's; the host process's own memory is not on it.
    base = 0 if torch.device(device).type == "cuda" else None
    return Plan(
        name=name,
        model=config.model,
        dtype=dtype_name(shape.dtype),
        device=device if config.device_map is None else f"device_map={config.device_map}",
        shape=shape,
        estimate=estimate(shape, workload, timing=timing, base_bytes=base),
        free_bytes=free_for(config, device),
        devices=None if config.device_map is None else placement(shape, config.max_memory),
    )


def describe_plan(plan: Plan) -> str:
    """The plan as ``polylens plan`` prints it."""
    e = plan.estimate
    lines = [
        f"{plan.name} on {plan.model} ({plan.shape.model_type}, {plan.dtype}, {plan.device})",
        f"  parameters        {e.n_params / 1e9:.3f} B ({plan.shape.n_blocks} blocks, "
        f"d_model {plan.shape.d_model}, vocabulary {plan.shape.vocab})",
        f"  weights           {format_bytes(e.weight_bytes)}"
        + (
            " (" + ", ".join(f"{d} {format_bytes(b)}" for d, b in plan.devices.items()) + ")"
            if plan.devices
            else ""
        ),
        f"  activation store  {format_bytes(e.store_bytes)} on disk",
        f"  peak memory       {format_bytes(e.peak_bytes)} "
        f"({format_bytes(plan.free_bytes)} free now)",
        f"  tokens forward    {e.tokens_forward:,}"
        + (f" (+ {e.tokens_generated:,} generated)" if e.tokens_generated else ""),
    ]
    if e.seconds is not None:
        lines.append(f"  model time        {_duration(e.seconds)} on this machine (estimate)")
    lines.append("  passes:" if e.passes else "  passes:           none (no forward pass)")
    for name, (sequences, runs, tokens, repeats) in _grouped(e.passes).items():
        if len(repeats) > 1:  # e.g. candidates stacked a different number of times per language
            count = f"{runs:,} sequence runs"
        else:
            count = f"{sequences:,} sequences" + (f" x {min(repeats)}" if repeats != {1} else "")
        lines.append(f"    {name}: {count}, {tokens:,} tokens")
    if plan.devices is None and e.peak_bytes > plan.free_bytes:
        lines.append(f"  does not fit: {remedy(plan.dtype)}")
    return "\n".join(lines)


def _grouped(passes: tuple[dict, ...]) -> dict[str, tuple[int, int, int, set[int]]]:
    """Passes of the same name as one line (e.g. the same pass in every language): sequences,
    sequences times repeats, tokens and the repeat counts met."""
    out: dict[str, tuple[int, int, int, set[int]]] = {}
    for p in passes:
        n, runs, tokens, repeats = out.get(p["pass"], (0, 0, 0, set()))
        out[p["pass"]] = (
            n + p["sequences"],
            runs + p["sequences"] * p["repeats"],
            tokens + p["tokens"],
            repeats | {p["repeats"]},
        )
    return out


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def measure_plan(
    names: Sequence[str] | None = None, *, full: bool = False, device: str | None = None
) -> dict:
    """Plan each experiment, run it in a fresh process, and compare (``polylens bench plan``).

    Each run gets an empty activation store and result directory of its own, so that its store
    size and wall time are a first run's; peak resident memory is the child's own (``wait4``).
    Profiles as ``polylens report`` uses them (the quick one unless ``full``).
    """
    from experiments import registered, resolve_config
    from experiments.report import profile_path

    rows = []
    for name in names or [e.name for e in registered()]:
        profile = None if full else profile_path(name)
        with tempfile.TemporaryDirectory(prefix="polylens-plan-") as tmp:
            overrides = {"store": f"{tmp}/store", "out": f"{tmp}/out", "device": device}
            config = resolve_config(name, profile, overrides)
            plan = make_plan(name, config)
            argv = [sys.executable, "-m", "experiments.cli", "run", name]
            argv += ["--config", str(profile)] if profile else []
            argv += [f"store={tmp}/store", f"out={tmp}/out"]
            argv += [f"device={device}"] if device else []
            log_path = Path(tmp, "stderr.txt")
            start = time.perf_counter()
            # stderr to a file, not a pipe: the run's progress bars would fill a pipe nobody
            # reads until the child ends, and the child would wait on it for ever.
            with log_path.open("wb") as log_file:
                child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log_file)
                _, status, usage = os.wait4(child.pid, 0)
            seconds = time.perf_counter() - start
            if status != 0:
                error = log_path.read_text(errors="replace").strip().splitlines()[-1:]
                raise PolylensError(f"{name} failed while measuring its plan: {error}")
            store = sum(f.stat().st_size for f in Path(tmp, "store").rglob("*") if f.is_file())
        e = plan.estimate
        peak = usage.ru_maxrss * 1024  # kilobytes on Linux
        rows.append(
            {
                "experiment": name,
                "tokens_forward": e.tokens_forward,
                "tokens_generated": e.tokens_generated,
                "store_bytes_planned": e.store_bytes,
                "store_bytes_measured": store,
                "store_error": _error(e.store_bytes, store),
                "peak_bytes_planned": e.peak_bytes,
                "peak_bytes_measured": peak,
                "peak_error": _error(e.peak_bytes, peak),
                "model_seconds_planned": e.seconds,
                "wall_seconds_measured": seconds,
                "time_error": _error(e.seconds, seconds),
            }
        )
    return {"model": config.model, "profile": "full" if full else "quick", "rows": rows}


def _error(planned: float | None, measured: float) -> float | None:
    """Relative error of a plan: (planned - measured) / measured; None where nothing to compare."""
    if planned is None or measured == 0:
        return None
    return (planned - measured) / measured
