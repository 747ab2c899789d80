"""Control tasks for probes (Hewitt & Liang 2019, "Designing and Interpreting Probes ...").

A probe's accuracy alone does not say what it read: a label that goes with a surface property
(the relation a question asks about, its template, an invented name) is readable without the
property the probe claims to find. The control task keeps what such a shortcut could use and
destroys the rest: labels are shuffled *within* each group (e.g. relation), so every group keeps
its label counts while the link from an item to its own label is gone. The same probe is fitted
on the control labels; selectivity = accuracy - control accuracy, per layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import PolylensError


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
