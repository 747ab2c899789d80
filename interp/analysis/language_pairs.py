"""Language pairs grouped by relatedness, and the per-layer summaries of a pair metric.

``interp.analysis.similarity`` gives one ``[layer, lang, lang]`` tensor per metric; this module
says which pairs share a script, a family or a branch (from ``interp.data.languages``) and
summarises a metric over those groups: the peak layer of each pair, per-group curves with their
interquartile range, and the correlation of the metric with each kind of relatedness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.data.languages import LANGUAGES
from interp.errors import PolylensError

PairValues = Float[Tensor, "layer lang lang"]

__all__ = ["PairGroups", "group_curves", "pair_groups", "peak_layers", "relatedness_correlation"]


def peak_layers(
    values: PairValues, layers: Sequence[int]
) -> tuple[Int[Tensor, "lang lang"], Float[Tensor, "lang lang"]]:
    """The layer (model index) where each pair's metric is highest, and its value there."""
    best, where = values.max(0)
    return torch.as_tensor(list(layers), device=where.device)[where], best


@dataclass(frozen=True)
class PairGroups:
    """Which ordered pairs ``(a, b)``, ``a != b``, share a script, a family or a branch."""

    langs: list[str]
    off_diagonal: Tensor
    same_script: Tensor
    same_family: Tensor
    """Same top-level family (``Indo-European``), whatever the branch."""
    same_branch: Tensor
    """Same family and branch (``Indo-European (Romance)``)."""

    def relations(self) -> dict[str, Tensor]:
        """The relatedness indicators by name (``[lang, lang]`` booleans)."""
        return {
            "same_script": self.same_script,
            "same_family": self.same_family,
            "same_branch": self.same_branch,
        }


def pair_groups(langs: Sequence[str]) -> PairGroups:
    """Relatedness of every two languages from ``interp.data.languages``."""
    unknown = [code for code in langs if code not in LANGUAGES]
    if unknown:
        raise PolylensError(f"no script or family known for language {unknown[0]!r}")
    meta = [LANGUAGES[code] for code in langs]

    def same(key) -> Tensor:
        return torch.tensor([[key(a) == key(b) for b in meta] for a in meta])

    off = ~torch.eye(len(langs), dtype=torch.bool)
    return PairGroups(
        list(langs),
        off,
        same(lambda m: m.script) & off,
        same(lambda m: m.family.split(" (")[0]) & off,
        same(lambda m: m.family) & off,
    )


def group_curves(
    values: PairValues, groups: PairGroups
) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """Per layer, the mean and interquartile range over the ordered pairs of each pair group.

    Groups (pairs of two distinct languages): ``same script``, ``different script``, ``same
    family`` and ``different family``; a group with no pair is left out.
    """
    out = {}
    for name, mask in (
        ("same script", groups.same_script),
        ("different script", groups.off_diagonal & ~groups.same_script),
        ("same family", groups.same_family),
        ("different family", groups.off_diagonal & ~groups.same_family),
    ):
        if mask.any():
            pairs = values[:, mask.to(values.device)].float().cpu()
            q = pairs.quantile(torch.tensor([0.25, 0.75]), dim=1)
            out[name] = (pairs.mean(1), q[0], q[1])
    return out


def relatedness_correlation(
    values: PairValues, groups: PairGroups
) -> dict[str, Float[Tensor, " layer"]]:
    """Pearson correlation, per layer, of a metric with each relatedness indicator.

    Over unordered pairs ``a < b``, the metric symmetrised as the mean of ``(a, b)`` and
    ``(b, a)``; NaN where an indicator is constant (e.g. no two languages share a script).
    """
    n = len(groups.langs)
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
    sym = ((values + values.transpose(1, 2)) / 2)[:, upper]
    out = {}
    for name, related in groups.relations().items():
        ind = related[upper].to(sym.device, sym.dtype)
        a = sym - sym.mean(-1, keepdim=True)
        b = ind - ind.mean()
        denom = a.norm(dim=-1) * b.norm()
        out[name] = torch.where(denom > 0, (a @ b) / denom, torch.nan)
    return out
