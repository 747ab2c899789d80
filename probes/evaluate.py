"""Probe metrics per layer (accuracy, AUROC, calibration error) and stratified k-fold CV.

Every layer's probe is its own problem, so ``by_layer_chunks`` runs any of these on stored
activations a chunk of layers at a time (a set larger than memory is never held whole).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import PolylensError
from interp.storage.activations import READ_BUDGET, Activations
from probes.linear import LinearProbe, check_features, fit_logistic


def accuracy(prob: Float[Tensor, "layer n"], y: Tensor) -> Float[Tensor, " layer"]:
    """Share of correct 0.5-threshold predictions."""
    return ((prob >= 0.5).float() == y.to(prob)).float().mean(-1)


def balanced_accuracy(prob: Float[Tensor, "layer n"], y: Tensor) -> Float[Tensor, " layer"]:
    """Mean of the recall on each class: 0.5 for a constant guess, however unbalanced ``y``."""
    y = y.bool()
    hit = prob >= 0.5
    return (hit[:, y].float().mean(-1) + (~hit[:, ~y]).float().mean(-1)) / 2


def auroc(score: Float[Tensor, "layer n"], y: Tensor) -> Float[Tensor, " layer"]:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    y = y.bool()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    order = score.argsort(-1)
    ranks = torch.empty_like(score)
    ranks.scatter_(
        -1,
        order,
        torch.arange(1, score.shape[-1] + 1, dtype=score.dtype).expand_as(score).contiguous(),
    )
    # Average the ranks of tied scores.
    for layer in range(score.shape[0]):
        values, inverse = torch.unique(score[layer], return_inverse=True)
        if len(values) < score.shape[-1]:
            sums = torch.zeros(len(values), dtype=score.dtype).index_add_(0, inverse, ranks[layer])
            counts = torch.bincount(inverse, minlength=len(values)).to(score.dtype)
            ranks[layer] = (sums / counts)[inverse]
    u = ranks[:, y].sum(-1) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def expected_calibration_error(
    prob: Float[Tensor, "layer n"], y: Tensor, n_bins: int = 10
) -> Float[Tensor, " layer"]:
    """ECE with equal-width bins on P(label = 1)."""
    y = y.to(prob)
    bins = (prob * n_bins).long().clamp(max=n_bins - 1)
    ece = torch.zeros(prob.shape[0])
    for b in range(n_bins):
        in_bin = bins == b
        count = in_bin.sum(-1).float()
        conf = (prob * in_bin).sum(-1) / count.clamp_min(1)
        freq = (y * in_bin).sum(-1) / count.clamp_min(1)
        ece += count / prob.shape[-1] * (conf - freq).abs()
    return ece


def stratified_folds(
    y: Tensor, k: int, seed: int, *, strata: Sequence[str] | None = None
) -> list[Int[Tensor, " fold_n"]]:
    """Test indices of ``k`` folds, each class spread evenly, shuffled with ``seed``.

    With ``strata`` (one name per item, e.g. the relation a question asks about), every
    (stratum, class) cell is spread evenly over the folds, so each fold keeps every stratum's
    base rate: a probe cannot gain from a relation being over-represented in its test fold.
    """
    gen = torch.Generator().manual_seed(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    for cls in (0, 1):
        idx = (y == cls).nonzero().flatten()
        if len(idx) < k:
            raise PolylensError(
                f"class {cls} has {len(idx)} items, fewer than the {k} folds; "
                "use fewer folds or more data"
            )
        if strata is None:
            idx = idx[torch.randperm(len(idx), generator=gen)]
            for i, j in enumerate(idx.tolist()):
                folds[i % k].append(j)
    if strata is not None:
        if len(strata) != len(y):
            raise PolylensError(f"got {len(strata)} strata for {len(y)} items; give one per item")
        start = 0  # dealing continues across cells, so fold sizes differ by at most one
        for cell in sorted({(s, int(c)) for s, c in zip(strata, y.tolist())}):
            idx = torch.tensor([i for i, key in enumerate(zip(strata, y.tolist())) if key == cell])
            idx = idx[torch.randperm(len(idx), generator=gen)]
            for i, j in enumerate(idx.tolist()):
                folds[(start + i) % k].append(j)
            start += len(idx)
    return [torch.tensor(sorted(f)) for f in folds]


def cross_validate(
    x: Float[Tensor, "layer n d"],
    y: Tensor,
    *,
    k: int = 5,
    seed: int = 0,
    fit: Callable[[Tensor, Tensor], LinearProbe] = fit_logistic,
    strata: Sequence[str] | None = None,
) -> dict[str, Float[Tensor, "fold layer"]]:
    """Per-fold, per-layer test metrics of probes fitted on the other folds.

    ``strata`` (one name per item) balances every stratum's classes over the folds (see
    ``stratified_folds``).
    """
    check_features(x, y)
    folds = stratified_folds(y, k, seed, strata=strata)
    out: dict[str, list[Tensor]] = {"accuracy": [], "auroc": [], "ece": []}
    for test in folds:
        train = torch.ones(len(y), dtype=torch.bool)
        train[test] = False
        probe = fit(x[:, train], y[train])
        prob = probe.predict_proba(x[:, test]).cpu()
        out["accuracy"].append(accuracy(prob, y[test]))
        out["auroc"].append(auroc(prob, y[test]))
        out["ece"].append(expected_calibration_error(prob, y[test]))
    return {name: torch.stack(values) for name, values in out.items()}


Result = TypeVar("Result", Tensor, dict)


def by_layer_chunks(
    analysis: Callable[[Float[Tensor, "layer n d"]], Result],
    acts: Activations,
    *,
    budget: int | None = READ_BUDGET,
) -> Result:
    """``analysis`` of ``acts`` a chunk of layers at a time, its results joined along the layers.

    ``analysis`` takes float32 features ``[layer, n, d]`` (one row per item, as
    ``question_features`` gives them) and returns tensors whose last axis is the layer
    (``cross_validate``'s ``[fold, layer]``, ``control_task``'s dicts of them), e.g.
    ``by_layer_chunks(partial(cross_validate, y=y, k=5), acts)``. Chunks read at most ``budget``
    bytes of activations. Layers fitted in one batch stop together, when the slowest has
    converged, so results agree with an all-layers fit within the solver's tolerance.
    """
    parts = [analysis(x.transpose(0, 1).float()) for _, x in acts.layer_chunks(budget=budget)]
    return _join(parts)


def _join(parts: list) -> Tensor | dict:
    if isinstance(parts[0], Tensor):
        return torch.cat(parts, dim=-1)
    if isinstance(parts[0], dict):
        return {key: _join([part[key] for part in parts]) for key in parts[0]}
    raise PolylensError(
        f"by_layer_chunks joins tensors and dicts of them; the analysis returned "
        f"{type(parts[0]).__name__}"
    )
