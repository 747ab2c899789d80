"""Probe curves across languages: cross-validated probes per language and layer, and their peaks.

For each language, a logistic probe (with Hewitt & Liang's control task when asked) and a
mass-mean probe are cross-validated at every layer with folds balanced per group (a relation);
the result is one table row per (language, probe, layer), the logistic AUROC curve per language,
and per language the fold-mean accuracy and AUROC of the probe and of its control. A language
whose smaller class has fewer items than folds is skipped, with a note saying so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor
from tqdm.auto import tqdm

from probes.controls import control_task
from probes.evaluate import cross_validate
from probes.linear import fit_logistic, fit_mass_mean


@dataclass
class ProbeCurves:
    """What ``probe_curves`` measures over a set of languages."""

    rows: list[dict] = field(default_factory=list)
    """One per (language, probe, layer): every CV metric's mean and std over the folds."""
    curves: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    """language -> logistic AUROC per layer (mean, std over folds)."""
    control: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    """language -> accuracy, control_accuracy, selectivity, auroc, control_auroc per layer."""
    skipped: list[str] = field(default_factory=list)
    """One note per language left out (too few items in a class for the folds)."""


def probe_curves(
    data: dict[str, tuple[Tensor, Tensor]],
    groups: list[str],
    *,
    items: str,
    labels: str,
    folds: int,
    seed: int,
    C: float,  # noqa: N803 (scikit-learn's name)
    with_control: bool,
    control_shuffles: int,
) -> ProbeCurves:
    """Cross-validate the probes of every language at every layer (see the module docstring).

    Args:
        data: language -> (features ``[layer, n, d]``, labels ``[n]``).
        groups: the group (relation) of each item: folds are balanced per group, and the control
            task shuffles labels within group.
        items: which items these are (``"all"``, ``"answerable"``), for the rows and notes.
        labels: the label scheme, for the notes.
        folds: number of CV folds.
        seed: seed of the folds and the control's shuffles.
        C: inverse L2 strength of the logistic probe.
        with_control: fit the control task beside the logistic probe.
        control_shuffles: shuffles of the control task.
    """
    out = ProbeCurves()
    for lang, (x, y) in tqdm(data.items(), desc=f"probes ({items})", unit="language"):
        smallest = min(int(y.sum()), int((1 - y).sum()))
        if smallest < folds:
            out.skipped.append(
                f"{lang} ({items} questions): {smallest} items in the smaller class under "
                f"'{labels}' labels, fewer than {folds} folds; skipped"
            )
            continue
        logistic = partial(fit_logistic, C=C)
        split = {"k": folds, "seed": seed}
        scores = {"logistic": None, "mass_mean": None}
        if with_control:
            ct = control_task(x, y, groups, fit=logistic, shuffles=control_shuffles, **split)
            scores |= {"logistic": ct["task"], "logistic_control": ct["control"]}
        else:
            scores["logistic"] = cross_validate(x, y, fit=logistic, strata=groups, **split)
        scores["mass_mean"] = cross_validate(x, y, fit=fit_mass_mean, strata=groups, **split)
        for name, cv in scores.items():
            for li in range(x.shape[0]):
                out.rows.append(
                    {"items": items, "lang": lang, "probe": name, "layer": li}
                    | {f"{m}_mean": float(v[:, li].mean()) for m, v in cv.items()}
                    | {f"{m}_std": float(v[:, li].std()) for m, v in cv.items()}
                )
            if name == "logistic":
                out.curves[lang] = (cv["auroc"].mean(0), cv["auroc"].std(0))
        if with_control:
            task, ctrl = scores["logistic"], scores["logistic_control"]
            out.control[lang] = {
                "accuracy": task["accuracy"].mean(0),
                "control_accuracy": ctrl["accuracy"].mean(0),
                "selectivity": ct["selectivity"],
                "auroc": task["auroc"].mean(0),
                "control_auroc": ctrl["auroc"].mean(0),
            }
    return out


def curve_peaks(curves: dict[str, tuple[Tensor, Tensor]], n_blocks: int) -> dict[str, dict]:
    """Per language: the layer of the highest mean AUROC and its relative depth."""
    return {
        lang: {
            "peak_layer": int(mean.argmax()),
            "relative_depth": int(mean.argmax()) / n_blocks,
            "peak_auroc": float(mean.max()),
        }
        for lang, (mean, _) in curves.items()
    }


def known_rates(subset: dict[str, tuple[Tensor, Tensor]], relations: list[str]) -> dict[str, float]:
    """Share of answerable questions the model knows, per relation (mean over languages)."""
    ys = torch.stack([y for _, y in subset.values()]).float()  # [lang, n]
    return {r: float(ys[:, [g == r for g in relations]].mean()) for r in sorted(set(relations))}
