"""Control tasks for probes (Hewitt & Liang 2019, "Designing and Interpreting Probes ...").

A probe's accuracy alone does not say what it read: a label that goes with a surface property
(the relation a question asks about, its template, an invented name) is readable without the
property the probe claims to find. The control task keeps what such a shortcut could use and
destroys the rest: labels are shuffled *within* each group (e.g. relation), so every group keeps
its label counts while the link from an item to its own label is gone. The same probe is fitted
on the control labels; selectivity = accuracy - control accuracy, per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import PolylensError
from probes.evaluate import cross_validate
from probes.linear import LinearProbe, fit_logistic


def shuffle_within_groups(
    y: Int[Tensor, " n"], groups: Sequence[str], seed: int
) -> Int[Tensor, " n"]:
    """Control labels: ``y`` permuted among the items of each group, seeded.

    Every group keeps exactly its label counts (so a probe that reads only the group does as well
    on the control labels as on the real ones); which item of a group gets which label is random.
    """
    if len(groups) != len(y):
        raise PolylensError(f"got {len(groups)} groups for {len(y)} labels; give one per item")
    gen = torch.Generator().manual_seed(seed)
    out = y.clone()
    for group in sorted(set(groups)):
        idx = torch.tensor([i for i, g in enumerate(groups) if g == group])
        out[idx] = y[idx[torch.randperm(len(idx), generator=gen)]]
    return out


def selectivity(
    task: Float[Tensor, "*fold layer"], control: Float[Tensor, "*fold layer"]
) -> Float[Tensor, " layer"]:
    """Mean task metric minus mean control metric per layer (means over folds, if any)."""
    if task.ndim > 1:
        task, control = task.mean(0), control.mean(0)
    return task - control


def control_task(
    x: Float[Tensor, "layer n d"],
    y: Int[Tensor, " n"],
    groups: Sequence[str],
    *,
    k: int = 5,
    seed: int = 0,
    fit: Callable[[Tensor, Tensor], LinearProbe] = fit_logistic,
    shuffles: int = 1,
) -> dict[str, dict[str, Tensor] | Tensor]:
    """The probe on the real labels and on the control labels, cross-validated alike.

    Both use folds balanced per group (``stratified_folds`` with ``strata=groups``), so each fold
    keeps every group's base rate for the real and for the control labels. With ``shuffles`` > 1
    the control metrics are averaged over that many shufflings (seeds ``seed``, ``seed + 1``, ...):
    one shuffle's accuracy varies by a few points on a hundred items.

    Returns:
        ``{"task": ..., "control": ...}``, each ``cross_validate``'s ``[fold, layer]`` metrics,
        and ``"selectivity"``: ``[layer]`` mean accuracy minus mean control accuracy.
    """
    if shuffles < 1:
        raise PolylensError(f"shuffles = {shuffles}; the control task needs at least one")
    task = cross_validate(x, y, k=k, seed=seed, fit=fit, strata=groups)
    runs = [
        cross_validate(
            x, shuffle_within_groups(y, groups, seed + i), k=k, seed=seed, fit=fit, strata=groups
        )
        for i in range(shuffles)
    ]
    control = {m: torch.stack([r[m] for r in runs]).mean(0) for m in runs[0]}
    return {
        "task": task,
        "control": control,
        "selectivity": selectivity(task["accuracy"], control["accuracy"]),
    }


def selectivity_peak(
    task: Float[Tensor, "lang layer"], control: Float[Tensor, "lang layer"]
) -> dict[str, float | int]:
    """Where the selectivity curve, averaged over rows (e.g. languages), peaks, and its parts."""
    sel = (task - control).mean(0)
    at = int(sel.argmax())
    return {
        "peak_layer": at,
        "peak_selectivity": float(sel[at]),
        "accuracy_at_peak": float(task.mean(0)[at]),
        "control_accuracy_at_peak": float(control.mean(0)[at]),
    }
