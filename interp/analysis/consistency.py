"""Accuracy, cross-lingual consistency and the language of inquiry, from per-fact outcomes.

Plain functions on ``{(fact_id, lang): value}`` mappings (no model), so that a notebook computes
exactly what the ``factual-consistency`` experiment reports.

Definitions (after "Cross-lingual Consistency of Factual Knowledge in Multilingual Language
Models", Qi et al. 2023, and "Language Models' Factuality Depends on the Language of Inquiry",
Aggarwal et al. 2025):

- **Overlap consistency** of languages a and b (one scorer): over the facts asked in both,
  ``|correct in a and in b| / |correct in a or in b|`` (NaN when no fact is correct in either).
- **Rank consistency at k** of a and b: over the facts asked in both, the mean of
  ``|top_k(a) ∩ top_k(b)| / k``, where ``top_k(x)`` is the set of the k best-ranked candidates'
  cross-language keys (``FactPrompt.keys``: the same key is the same answer in every language)
  and k is capped at the fact's number of candidates. 1 means the two languages put the same
  answers on top; a uniformly random ranking of n candidates gives k / n in expectation.
- **Language of inquiry**, for a language L: the facts about countries whose official language
  is L; ``native`` = their accuracy asked in L; ``foreign`` = their accuracy asked in the other
  languages (each fact's mean over them); the effect is ``native - foreign`` with a bootstrap
  interval over facts (paired: each fact contributes its native outcome minus its foreign mean).
- **Transfer metrics.** The paper names a Factual Recall Score (FRS), a Knowledge Transferability
  Score (KTS) and their combination X-FaKT, a harmonic mean; the exact formulas could not be
  recovered from the public material available here, so polylens defines, per language L and
  over all languages pooled: ``FRS = (native + foreign) / 2`` (recall whatever the language),
  ``KTS = 1 - |native - foreign|`` (1 when recall does not depend on the language of inquiry)
  and ``X-FaKT = 2 FRS KTS / (FRS + KTS)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from interp.metrics import bootstrap_mean

__all__ = [
    "grouped_accuracy",
    "language_of_inquiry",
    "overlap_consistency",
    "pair_summary",
    "rank_consistency",
    "transfer_scores",
]

Outcomes = Mapping[tuple[str, str], bool]
"""``{(fact_id, lang): correct}``."""


def grouped_accuracy(
    correct: Sequence[bool], groups: Sequence[str], *, n_boot: int, seed: int
) -> dict[str, dict[str, float]]:
    """Accuracy per group with its 95% bootstrap interval (over the group's items).

    Returns:
        ``{group: {"n", "accuracy", "ci_low", "ci_high"}}`` in first-seen group order.
    """
    out: dict[str, dict[str, float]] = {}
    for g in dict.fromkeys(groups):
        values = torch.tensor([float(c) for c, x in zip(correct, groups) if x == g])
        mean, lo, hi = bootstrap_mean(values, n_boot, seed)
        out[g] = {
            "n": len(values),
            "accuracy": float(mean),
            "ci_low": float(lo),
            "ci_high": float(hi),
        }
    return out


def _by_lang(outcomes: Mapping[tuple[str, str], object]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for (fact_id, lang), value in outcomes.items():
        out.setdefault(lang, {})[fact_id] = value
    return out


def overlap_consistency(outcomes: Outcomes, langs: Sequence[str]) -> torch.Tensor:
    """``[lang, lang]`` matrix of |correct in both| / |correct in either| (NaN: none in either)."""
    per = _by_lang(outcomes)
    n = len(langs)
    matrix = torch.full((n, n), math.nan)
    for i, a in enumerate(langs):
        for j, b in enumerate(langs):
            shared = per.get(a, {}).keys() & per.get(b, {}).keys()
            both = sum(bool(per[a][f]) and bool(per[b][f]) for f in shared)
            either = sum(bool(per[a][f]) or bool(per[b][f]) for f in shared)
            if either:
                matrix[i, j] = both / either
    return matrix


def rank_consistency(
    rankings: Mapping[tuple[str, str], Sequence[str]], langs: Sequence[str], k: int
) -> torch.Tensor:
    """``[lang, lang]`` mean top-k overlap of the candidate keys ranked best first, per fact.

    ``rankings[(fact_id, lang)]`` is the fact's candidate keys, best first. NaN for a pair that
    shares no fact.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    per = _by_lang(rankings)
    n = len(langs)
    matrix = torch.full((n, n), math.nan)
    for i, a in enumerate(langs):
        for j, b in enumerate(langs):
            shared = sorted(per.get(a, {}).keys() & per.get(b, {}).keys())
            overlaps = []
            for f in shared:
                ra, rb = per[a][f], per[b][f]
                kk = min(k, len(ra), len(rb))
                overlaps.append(len(set(ra[:kk]) & set(rb[:kk])) / kk)
            if overlaps:
                matrix[i, j] = sum(overlaps) / len(overlaps)
    return matrix


def pair_summary(matrix: torch.Tensor, langs: Sequence[str]) -> dict[str, object]:
    """Mean, min and max over the distinct language pairs (off the diagonal), NaNs left out."""
    pairs = [
        (langs[i], langs[j], float(matrix[i, j]))
        for i in range(len(langs))
        for j in range(i + 1, len(langs))
        if not math.isnan(float(matrix[i, j]))
    ]
    if not pairs:
        return {"mean": math.nan, "min": math.nan, "max": math.nan, "n_pairs": 0}
    lo = min(pairs, key=lambda p: p[2])
    hi = max(pairs, key=lambda p: p[2])
    return {
        "mean": sum(p[2] for p in pairs) / len(pairs),
        "min": lo[2],
        "min_pair": f"{lo[0]}-{lo[1]}",
        "max": hi[2],
        "max_pair": f"{hi[0]}-{hi[1]}",
        "n_pairs": len(pairs),
    }


def transfer_scores(native: float, foreign: float) -> dict[str, float]:
    """FRS, KTS and X-FaKT as polylens defines them (see the module docstring)."""
    frs = (native + foreign) / 2
    kts = 1 - abs(native - foreign)
    xfakt = 2 * frs * kts / (frs + kts) if frs + kts > 0 else 0.0
    return {"FRS": frs, "KTS": kts, "X-FaKT": xfakt}


def language_of_inquiry(
    outcomes: Outcomes,
    fact_language: Mapping[str, str],
    langs: Sequence[str],
    *,
    n_boot: int,
    seed: int,
) -> list[dict[str, object]]:
    """Per language L: accuracy on facts about L's countries asked in L vs in the other languages.

    Args:
        outcomes: ``{(fact_id, lang): correct}`` for the facts asked.
        fact_language: ``{fact_id: official language of the fact's country}``.
        langs: the languages asked (L needs at least one other to compare with).
        n_boot: bootstrap resamples of the paired per-fact differences.
        seed: seed of the resampling.

    Returns:
        One row per language with at least one such fact: ``lang``, ``n_facts``, ``native``,
        ``foreign``, ``effect`` (native - foreign), ``ci_low``, ``ci_high`` and the transfer
        scores; then a pooled row (``lang`` = ``all``) over every such fact.
    """
    rows, pooled = [], []
    for lang in langs:
        others = [x for x in langs if x != lang]
        facts = sorted(
            f
            for (f, x) in outcomes
            if x == lang and fact_language.get(f) == lang and others
            and all((f, o) in outcomes for o in others)
        )  # fmt: skip
        if not facts:
            continue
        native = torch.tensor([float(outcomes[(f, lang)]) for f in facts])
        foreign = torch.tensor(
            [sum(float(outcomes[(f, o)]) for o in others) / len(others) for f in facts]
        )
        pooled.append((native, foreign))
        rows.append({"lang": lang, **_effect_row(native, foreign, n_boot, seed)})
    if pooled:
        native = torch.cat([p[0] for p in pooled])
        foreign = torch.cat([p[1] for p in pooled])
        rows.append({"lang": "all", **_effect_row(native, foreign, n_boot, seed)})
    return rows


def _effect_row(native: torch.Tensor, foreign: torch.Tensor, n_boot: int, seed: int) -> dict:
    effect, lo, hi = bootstrap_mean(native - foreign, n_boot, seed)
    nat, fo = float(native.mean()), float(foreign.mean())
    return {
        "n_facts": len(native),
        "native": nat,
        "foreign": fo,
        "effect": float(effect),
        "ci_low": float(lo),
        "ci_high": float(hi),
        **transfer_scores(nat, fo),
    }
