"""cross-lingual-patching: at which layers does a subject carry its facts across languages?

After "How Do Multilingual Models Remember? Investigating Multilingual Factual Recall
Mechanisms": fact X's subject state is read from X's prompt in language A and written, at one
residual layer, into the prompt of another fact Y of the same relation in language B (the
subject's last token, or every position up to it). A case flips when the patched prompt prefers
X's answer in language B over Y's own answer in B (both scored by the candidate scorer: summed
log-probs of every answer token). The share of flips per layer is the profile; its peak says
where the subject's representation carries the fact, whatever the language it was read in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import torch

from experiments import register
from experiments.base import ExperimentConfig, ResultDir, seed_everything
from experiments.fields import Range, at_least
from interp import plots
from interp.analysis.factual_data import bundled_facts, with_demonstrations
from interp.analysis.patching import SwapCase, swap_partners, swap_scores, swap_workload
from interp.data import load
from interp.errors import PolylensError
from interp.metrics import bootstrap_mean
from interp.model.footprint import Workload
from interp.model.models import LoadedModel

NAME = "cross-lingual-patching"


@dataclass
class PatchingConfig(ExperimentConfig):
    """Patching settings on top of the shared experiment fields."""

    relations: list[str] | None = None
    """Relations of the bundled facts to use (default: all four)."""
    n_per_relation: int = 4
    """Target facts per relation, drawn with the seed (each gets one source fact)."""
    n_demos: int = 0
    """Solved facts of the same relation before each prompt (few-shot cloze)."""
    layers: list[int] | None = None
    """Residual layers to patch (default: every layer 0..L-1; layer L cannot reach the answer)."""
    variants: list[Literal["last", "prefix"]] = field(default_factory=lambda: ["last", "prefix"])
    """``last``: the subject's last token; ``prefix``: every position up to it."""
    n_boot: int = 1000
    """Bootstrap resamples of the flip-share intervals."""

    _ranges: ClassVar[dict[str, Range]] = {
        "n_per_relation": at_least(2),
        "n_demos": at_least(0),
        "n_boot": at_least(1),
    }
    needs_next_token: ClassVar[str | None] = "patching of next-token outputs"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.variants:
            raise PolylensError("config field variants is empty; use last, prefix or both")
        if self.layers is not None and (
            any(x < 0 for x in self.layers) or len(set(self.layers)) != len(self.layers)
        ):
            raise PolylensError("config field layers needs distinct layers >= 0")
        if self.relations is not None and len(self.relations) < 2:
            # The control reads a subject of another relation: one relation leaves none.
            raise PolylensError(
                "config field relations needs at least two relations (the control patches a "
                "subject of another relation); add one, or leave relations out for all four"
            )


def build_cases(config: PatchingConfig) -> tuple[list[SwapCase], list[SwapCase]]:
    """The swap cases of every ordered language pair, and their other-relation controls.

    A control case keeps the target and X's answer but reads the subject of a fact of another
    relation, about a third country, from its prompt in language A.
    """
    facts = bundled_facts(
        config.langs,
        n_per_relation=None,
        max_candidates=2,
        seed=config.seed,
        relations=config.relations,
    )
    facts = with_demonstrations(facts, config.n_demos, config.seed)
    by_key = {(f.fact_id, f.lang): f for f in facts}
    records = {(r.id, r.lang): r for r in load("facts", langs=config.langs)}
    relation_of = {f.fact_id: f.relation for f in facts}
    answers: dict[str, dict[str, str]] = {}
    for f in facts:
        answers.setdefault(f.fact_id, {})[f.lang] = f.answer
    partners = swap_partners(answers, relation_of)
    gen = torch.Generator().manual_seed(config.seed)
    targets = []
    for relation in sorted(set(relation_of.values())):
        ids = sorted(y for y in partners if relation_of[y] == relation)
        order = torch.randperm(len(ids), generator=gen).tolist()
        targets += [ids[i] for i in order[: config.n_per_relation]]
    all_ids = sorted(relation_of)
    cases, controls = [], []
    for y in targets:
        x = partners[y]
        code = {i: records[(i, config.langs[0])].subject_code for i in (x, y)}
        others = [
            z
            for z in all_ids
            if relation_of[z] != relation_of[y]
            and records[(z, config.langs[0])].subject_code not in code.values()
        ]
        z = others[int(torch.randint(len(others), (1,), generator=gen))]
        for a in config.langs:
            for b in config.langs:
                case = SwapCase(
                    relation_of[y],
                    x,
                    a,
                    by_key[(x, a)].prompt,
                    records[(x, a)].subject,
                    y,
                    b,
                    by_key[(y, b)].prompt,
                    records[(y, b)].subject,
                    answers[x][b],
                    answers[y][b],
                )
                cases.append(case)
                controls.append(
                    SwapCase(
                        case.relation,
                        z,
                        a,
                        by_key[(z, a)].prompt,
                        records[(z, a)].subject,
                        *(y, b, case.target_prompt, case.target_subject),
                        *(case.source_answer, case.target_answer),
                    )
                )
    return cases, controls


def _share(flags: torch.Tensor, n_boot: int, seed: int) -> tuple[float, float, float]:
    if not len(flags):
        return float("nan"), float("nan"), float("nan")
    mean, lo, hi = bootstrap_mean(flags.float(), n_boot, seed)
    return float(mean), float(lo), float(hi)


def _patch_layers(config: PatchingConfig, n_blocks: int) -> list[int]:
    layers = list(range(n_blocks)) if config.layers is None else sorted(config.layers)
    if max(layers) >= n_blocks:
        raise PolylensError(f"patch layers must be in 0..{n_blocks - 1}")
    return layers


def workload(config: PatchingConfig, model: LoadedModel) -> Workload:
    """Per variant, every case scored plain and patched at every layer; the controls at the
    peak layer (not known before the run: the deepest layer's share of the body is counted).
    Exact; the subject states are held in memory, nothing is stored."""
    cases, control_cases = build_cases(config)
    layers = _patch_layers(config, model.n_blocks)
    kw = dict(batch_size=config.batch_size)
    parts = [
        swap_workload(model, cases, layers, name=f"swap ({v})", variant=v, **kw)
        for v in config.variants
    ]
    headline = config.variants[0]
    controls = {
        "control: self-patch": [_self_case(c) for c in cases],
        "control: other relation": control_cases,
    }
    for name, chosen in controls.items():
        parts.append(swap_workload(model, chosen, [max(layers)], name=name, variant=headline, **kw))
    return Workload(
        tuple(p for part in parts for p in part.passes), held=max(p.held for p in parts)
    )


def _self_case(c: SwapCase) -> SwapCase:
    """The case that patches the target prompt with its own subject state."""
    return SwapCase(
        *(c.relation, c.target_fact, c.target_lang, c.target_prompt, c.target_subject),
        *(c.target_fact, c.target_lang, c.target_prompt, c.target_subject),
        *(c.source_answer, c.target_answer),
    )


@register(
    NAME,
    PatchingConfig,
    "cross-lingual subject patching: the layer profile of flips",
    workload=workload,
)
def run(config: PatchingConfig) -> Path:
    """Run the experiment; returns the result directory."""
    seed_everything(config.seed)
    cases, control_cases = build_cases(config)
    model = config.load_model()
    layers = _patch_layers(config, model.n_blocks)
    out = ResultDir(NAME, config)
    langs = config.langs
    pairs = [(a, b) for a in langs for b in langs]
    rows, pair_rows, curves, peaks = [], [], {}, {}
    for variant in config.variants:
        scores = swap_scores(
            model, cases, layers, variant=variant, batch_size=config.batch_size, progress=True
        )
        # a flip counts where the unpatched prompt preferred its own answer
        eligible = scores.base_margin < 0
        for li, layer in enumerate(layers):
            for a, b in pairs:
                mask = torch.tensor([c.source_lang == a and c.target_lang == b for c in cases])
                flags = scores.flipped[mask & eligible, li]
                mean, lo, hi = _share(flags, config.n_boot, 0)
                shift = float((scores.margin[mask, li] - scores.base_margin[mask]).mean())
                pair_rows.append(
                    dict(variant=variant, layer=layer, source_lang=a, target_lang=b)
                    | dict(flip_share=mean, ci_low=lo, ci_high=hi, n=int(len(flags)))
                    | dict(mean_margin_shift=shift)
                )
        cross = torch.tensor([c.source_lang != c.target_lang for c in cases])
        for name, mask in (("cross-lingual", cross), ("same language", ~cross)):
            flags = scores.flipped[mask & eligible]
            band = [_share(flags[:, li], config.n_boot, 0) for li in range(len(layers))]
            curves[(variant, name)] = band
            for layer, (mean, lo, hi) in zip(layers, band):
                rows.append(
                    dict(variant=variant, group=name, layer=layer, flip_share=mean)
                    | dict(ci_low=lo, ci_high=hi, n=int(len(flags)))
                )
        cross_curve = [m for m, _, _ in curves[(variant, "cross-lingual")]]
        peak_i = max(range(len(layers)), key=lambda i: cross_curve[i])
        peaks[variant] = {
            "layer": layers[peak_i],
            "flip_share": cross_curve[peak_i],
            "ci_low": curves[(variant, "cross-lingual")][peak_i][1],
            "ci_high": curves[(variant, "cross-lingual")][peak_i][2],
            "n_eligible": int((cross & eligible).sum()),
        }
        if variant == config.variants[0]:
            headline = (variant, peak_i, scores)
    out.table("flip_share_per_layer", rows)
    out.table("flip_share_per_layer_pair", pair_rows)
    controls = _controls(out, model, config, cases, control_cases, layers, headline)
    _figures(out, curves, pair_rows, layers, langs, config.variants)
    variant, peak_i, scores = headline
    metrics = {
        "model": config.model,
        "langs": langs,
        "n_cases": len(cases),
        "n_cases_per_pair": len(cases) // len(pairs),
        "eligible_share": float((scores.base_margin < 0).float().mean()),
        "headline_variant": variant,
        "peak_layer": peaks[variant]["layer"],
        "peak_flip_share": peaks[variant]["flip_share"],
        "peaks": peaks,
        "controls": controls,
    }
    out.metrics(metrics)
    out.report("Cross-lingual subject patching", __doc__.split("\n\n")[1], metrics)
    return out.commit()


def _controls(out, model, config, cases, control_cases, layers, headline) -> list:
    variant, peak_i, scores = headline
    layer = layers[peak_i]
    eligible = scores.base_margin < 0
    rows = []
    # 1) patching every target prompt into itself changes nothing
    selves = [_self_case(c) for c in cases]
    own = swap_scores(model, selves, [layer], variant=variant, batch_size=config.batch_size)
    change = float((own.margin[:, 0] - own.base_margin).abs().max())
    rows.append(
        out.control(
            "the patching machinery itself moves predictions",
            f"every target prompt patched with its own subject state at layer {layer} ({variant})",
            f"max |change of the answer margin| {change:.2e} over {len(cases)} prompts",
        )
    )
    # 2) a subject of another relation and country: flips to X's answer should stay rare
    ctrl = swap_scores(model, control_cases, [layer], variant=variant, batch_size=config.batch_size)
    share = float(ctrl.flipped[eligible, 0].float().mean()) if eligible.any() else float("nan")
    rows.append(
        out.control(
            "any foreign subject state breaks the prompt enough to flip it",
            f"a subject from another relation's prompt about a third country, patched at layer "
            f"{layer} ({variant}); share of eligible cases that flip to X's answer",
            f"{share:.3f} vs {float(scores.flipped[eligible, peak_i].float().mean()):.3f} with "
            "X's own subject",
        )
    )
    return rows


def _figures(out, curves, pair_rows, layers, langs, variants) -> None:
    series = {}
    for (variant, group), band in curves.items():
        series[f"{group} ({variant})"] = tuple([x[k] for x in band] for k in range(3))
    static, interactive = plots.lines_with_bands(
        layers,
        series,
        title="Subject patching: flip share by layer",
        xlabel="layer",
        ylabel="share of cases flipped to X's answer",
    )
    out.figure(
        "flip_share_by_layer",
        "Flip share by layer",
        "Share of cases (where the unpatched prompt preferred its own answer) that prefer the "
        "patched subject's answer, in the target language, after patching at each layer; band: "
        "95% bootstrap interval over cases. Cross-lingual: source and target languages differ.",
        static,
        interactive,
    )
    variant = variants[0]
    pair_series = {}
    for a in langs:
        for b in langs:
            if a == b:
                continue
            ys = [
                r["flip_share"]
                for r in pair_rows
                if r["variant"] == variant and r["source_lang"] == a and r["target_lang"] == b
            ]
            pair_series[f"{a}->{b}"] = (ys, ys, ys)
    static, interactive = plots.lines_with_bands(
        layers,
        pair_series,
        title=f"Flip share per language pair ({variant})",
        xlabel="layer",
        ylabel="flip share",
    )
    out.figure(
        "flip_share_by_pair",
        "Patching profile per language pair",
        f"Subject read in the first language, written into the second ({variant} variant).",
        static,
        interactive,
    )
