"""linear-shortcut: does skipping the last layers with a linear map make facts more consistent?

After "Lost in Multilinguality: Dissecting Cross-lingual Factual Inconsistency in Transformer
Language Models" (Wang et al. 2025): for every layer l, an affine map from the layer-l residual at
the prompt's last token to the final residual, fitted on the training split of the bundled facts
(least squares in float64 with a small ridge; the paper's mean Jacobian at a few layers), stands
in for the last blocks. Held-out facts are ranked among their candidates under it (the shortcut
is an edit on the forward pass; its scores are computed from cached states, which the controls
check against the scorer run under the edit), and accuracy and cross-lingual consistency per
layer are compared with the unmodified model.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from experiments import register
from experiments.base import ExperimentConfig, ResultDir, seed_everything
from experiments.fields import Range, at_least
from interp import plots
from interp.analysis.consistency import grouped_accuracy, overlap_consistency, pair_summary
from interp.analysis.factual import candidate_passes, continuation, rank_candidates
from interp.analysis.factual_data import bundled_facts, with_demonstrations
from interp.analysis.shortcut import (
    candidate_tails,
    first_token_ids,
    fit_least_squares,
    gold_first,
    identity_map,
    jacobian_passes,
    mean_jacobian,
    shortcut_candidate_logprobs,
    shortcut_edits,
    sweep_shortcuts,
)
from interp.data.loader import split_of
from interp.errors import PolylensError
from interp.extract import extract
from interp.interventions import intervene
from interp.model.footprint import Workload, forward_pass
from interp.model.models import LoadedModel
from interp.storage.store import ActivationStore

NAME = "linear-shortcut"


@dataclass
class ShortcutConfig(ExperimentConfig):
    """Shortcut settings on top of the shared experiment fields."""

    relations: list[str] | None = None
    """Relations of the bundled facts to use (default: all four)."""
    n_per_relation: int | None = None
    """Held-out facts per relation, drawn with the seed from the data's test split (default:
    all of them)."""
    n_train_per_relation: int | None = None
    """Training facts per relation, drawn with the seed from the train split (default: all)."""
    max_candidates: int = 10
    """Candidates per fact, the gold included (the other objects of its relation)."""
    n_demos: int = 2
    """Solved facts of the same relation before each prompt (few-shot cloze)."""
    layers: list[int] | None = None
    """Residual layers to shortcut from (default: every layer 0..L)."""
    ridge: float = 1e-3
    """Ridge of the least-squares fit, relative to the mean eigenvalue of X^T X."""
    betas: list[float] = field(default_factory=lambda: [1.0])
    """Scaling factors of the map's linear part (the mapped state is beta * W h + b)."""
    jacobian_layers: list[int] = field(default_factory=list)
    """Layers that also get the paper's mean-Jacobian map (costly: a d_model x d_model
    Jacobian per prompt)."""
    jacobian_prompts: int = 4
    """Training prompts the mean Jacobian averages over (drawn with the seed across languages)."""
    n_verify: int = 16
    """Held-out facts re-scored with the candidate scorer under the edit (control)."""
    n_boot: int = 1000
    """Bootstrap resamples of the accuracy intervals."""

    _ranges: ClassVar[dict[str, Range]] = {
        "n_per_relation": at_least(1),
        "n_train_per_relation": at_least(1),
        "max_candidates": at_least(2),
        "n_demos": at_least(0),
        "ridge": at_least(0),
        "jacobian_prompts": at_least(1),
        "n_verify": at_least(0),
        "n_boot": at_least(1),
    }
    needs_next_token: ClassVar[str | None] = "the linear shortcut"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.betas or any(not math.isfinite(b) or b <= 0 for b in self.betas):
            raise PolylensError("config field betas needs at least one positive number")
        for name in ("layers", "jacobian_layers"):
            values = getattr(self, name) or []
            if any(v < 0 for v in values) or len(set(values)) != len(values):
                raise PolylensError(f"config field {name} needs distinct layers >= 0")
        if len(self.langs) < 2:
            raise PolylensError("linear-shortcut needs at least two languages (consistency)")


def _facts(config: ShortcutConfig):
    """Held-out and training facts, drawn per relation from the data's own split."""
    facts = bundled_facts(
        config.langs,
        n_per_relation=None,
        max_candidates=config.max_candidates,
        seed=config.seed,
        relations=config.relations,
    )
    chosen: set[str] = set()
    for split, n in (("test", config.n_per_relation), ("train", config.n_train_per_relation)):
        for relation in sorted({f.relation for f in facts}):
            ids = sorted({f.fact_id for f in facts if f.relation == relation})
            ids = [i for i in ids if split_of(i) == split]
            random.Random(f"{config.seed}:{split}:{relation}").shuffle(ids)
            chosen.update(ids if n is None else ids[:n])
    # demonstrations come from every fact of the relation, never the fact itself
    kept = [f for f in facts if f.fact_id in chosen]
    facts = with_demonstrations(kept, config.n_demos, config.seed, pool=facts)
    train = [f for f in facts if split_of(f.fact_id) == "train"]
    test = [f for f in facts if split_of(f.fact_id) == "test"]
    if len(train) < 2 or not test:
        raise PolylensError("too few facts for a train/test split; raise the facts per relation")
    return train, test


def _check_layers(config: ShortcutConfig, n_blocks: int) -> list[int]:
    layers = list(range(n_blocks + 1)) if config.layers is None else sorted(config.layers)
    for layer in [*layers, *config.jacobian_layers]:
        if layer > n_blocks:
            raise PolylensError(f"layer {layer} does not exist: the model has layers 0..{n_blocks}")
    # Jacobian layers need their states too, and every fit needs the final layer's.
    return sorted({*layers, *config.jacobian_layers, n_blocks})


def _jacobian_prompts(config: ShortcutConfig, train) -> list[str]:
    """The training prompts the mean Jacobian averages over, drawn with the seed."""
    prompts = [f.prompt for f in train]
    random.Random(f"{config.seed}:jacobian").shuffle(prompts)
    return prompts[: config.jacobian_prompts]


def workload(config: ShortcutConfig, model: LoadedModel) -> Workload:
    """Residuals of the train and test prompts (store-cached), candidate ranking of the test
    facts, the mean Jacobians, and the control's ranking under the edit; every shortcut is
    scored from cached states (one unembedding, no forward pass). Exact for a cold store."""
    train, test = _facts(config)
    layers = _check_layers(config, model.n_blocks)
    passes = [
        forward_pass(
            model, f"{split} residuals", [f.prompt for f in facts],
            batch_size=config.batch_size, stored=len(layers),
        )
        for split, facts in (("train", train), ("test", test))
    ]  # fmt: skip

    def ranking(name: str, facts) -> tuple:
        conts = [[continuation(f.prompt, c, f.lang) for c in f.candidates] for f in facts]
        prompts = [f.prompt for f in facts]
        return candidate_passes(model, name, prompts, conts, batch_size=config.batch_size)

    passes += ranking("rank", test)
    jac_prompts = _jacobian_prompts(config, train)
    for layer in config.jacobian_layers:
        passes += jacobian_passes(model, jac_prompts, layer)
    n = min(config.n_verify, len(test))
    if n:
        passes += ranking("control: rank under the edit", test[:n])
    jacobians = 4 * model.d_model * len(config.jacobian_layers)  # float64 d x d, two at once
    return Workload(tuple(passes), held=(len(train) + len(test)) * len(layers) + jacobians)


@register(
    NAME,
    ShortcutConfig,
    "final-layer linear shortcut: accuracy and consistency per layer",
    workload=workload,
)
def run(config: ShortcutConfig) -> Path:
    """Run the experiment; returns the result directory."""
    seed_everything(config.seed)
    train, test = _facts(config)
    model = config.load_model()
    layers = _check_layers(config, model.n_blocks)
    final = model.n_blocks
    out = ResultDir(NAME, config)
    store = ActivationStore(config.store)
    states = {
        name: extract(
            model,
            [f.prompt for f in facts],
            layers=layers,
            batch_size=config.batch_size,
            store=store,
        ).tensor
        for name, facts in (("train", train), ("test", test))
    }
    base = rank_candidates(model, test, batch_size=config.batch_size)
    conts = [[continuation(f.prompt, c, f.lang) for c in f.candidates] for f in test]
    firsts = first_token_ids(model, conts)
    tails = candidate_tails(model, states["test"][:, -1], firsts, base.logprobs)
    gold = [f.candidates.index(f.answer) for f in test]
    jac_prompts = _jacobian_prompts(config, train)
    jac_maps = [
        mean_jacobian(model, jac_prompts, layer, progress=True) for layer in config.jacobian_layers
    ]
    result = sweep_shortcuts(
        model,
        states["train"],
        states["test"],
        layers,
        first_ids=firsts,
        tails=tails,
        gold=gold,
        betas=config.betas,
        ridge=config.ridge,
        jacobian_maps=jac_maps,
    )
    langs = config.langs
    keys = [(f.fact_id, f.lang) for f in test]
    base_correct = [bool(c) for c in base.correct]
    base_cons = overlap_consistency(dict(zip(keys, base_correct)), langs)
    base_acc = sum(base_correct) / len(base_correct)
    base_summary = pair_summary(base_cons, langs)

    rows, pair_rows, curve = [], [], {}
    for (method, layer, beta), correct in sorted(result.correct.items()):
        cons = overlap_consistency(dict(zip(keys, correct)), langs)
        summary = pair_summary(cons, langs)
        acc = sum(correct) / len(correct)
        curve[(method, layer, beta)] = (acc, summary["mean"])
        per_lang = grouped_accuracy(correct, [f.lang for f in test], n_boot=config.n_boot, seed=0)
        for lang, stats in per_lang.items():
            rows.append(dict(method=method, layer=layer, beta=beta, lang=lang) | stats)
        for i, a in enumerate(langs):
            for j, b in enumerate(langs):
                if i < j:
                    pair_rows.append(
                        dict(method=method, layer=layer, beta=beta, pair=f"{a}-{b}")
                        | dict(consistency=float(cons[i, j]), baseline=float(base_cons[i, j]))
                    )
    for lang, stats in grouped_accuracy(
        base_correct, [f.lang for f in test], n_boot=config.n_boot, seed=0
    ).items():
        rows.append(dict(method="baseline", layer=final, beta=1.0, lang=lang) | stats)
    out.table("accuracy_per_layer_language", rows)
    out.table("consistency_per_layer_pair", pair_rows)
    out.table(
        "summary_per_layer",
        [
            dict(method=m, layer=layer, beta=beta, accuracy=a, consistency=c)
            for (m, layer, beta), (a, c) in sorted(curve.items())
        ],
    )

    # the best shortcut below the last layer, by held-out accuracy (selected on the same facts)
    inner = {k: v for k, v in curve.items() if k[1] < final} or curve
    best = max(inner, key=lambda k: (inner[k][0], inner[k][1]))
    best_acc, best_cons = inner[best]
    controls = _controls(
        out, model, config, test, states, layers, result, best, base, firsts, tails, gold
    )
    _figures(out, curve, layers, base_acc, base_summary["mean"], config.betas)
    metrics = {
        "model": config.model,
        "n_train_prompts": len(train),
        "n_test_prompts": len(test),
        "n_test_facts": len({f.fact_id for f in test}),
        "langs": langs,
        "baseline_accuracy": base_acc,
        "baseline_consistency_mean": base_summary["mean"],
        "best_method": best[0],
        "best_layer": best[1],
        "best_beta": best[2],
        "best_accuracy": best_acc,
        "best_consistency_mean": best_cons,
        "accuracy_change": best_acc - base_acc,
        "consistency_change": best_cons - base_summary["mean"],
        "selection_note": "best layer chosen on the held-out facts themselves (optimistic)",
        "jacobian": {
            "layers": list(config.jacobian_layers),
            "prompts": config.jacobian_prompts,
            "accuracy": {
                f"{layer}@{beta}": curve[("jacobian", layer, beta)][0]
                for layer in config.jacobian_layers
                for beta in config.betas
            },
        },
        "baseline_consistency": base_summary,
        "controls": controls,
    }
    out.metrics(metrics)
    out.report("Final-layer linear shortcut", __doc__.split("\n\n")[1], metrics)
    return out.commit()


def _controls(out, model, config, test, states, layers, result, best, base, firsts, tails, gold):
    method, layer, beta = best
    final, li = model.n_blocks, layers.index(best[1])
    controls = []
    # 1) the cached-state scores equal the candidate scorer run under the edit
    n = min(config.n_verify, len(test))
    if n:
        amap = result.maps[(method, layer)]
        with intervene(model, shortcut_edits(model, amap, beta=beta)):
            direct = rank_candidates(model, test[:n], batch_size=config.batch_size)
        cached = shortcut_candidate_logprobs(
            model, states["test"][:n, li], amap, firsts[:n], tails[:n], beta=beta
        )
        diff = max(float((a - b).abs().max()) for a, b in zip(direct.logprobs, cached))
        agree = sum(bool(c) == gold_first(s, g) for c, s, g in zip(direct.correct, cached, gold))
        controls.append(
            out.control(
                "scores computed from cached states are not what the model does under the edit",
                f"{n} held-out facts re-ranked by the candidate scorer under the shortcut edit "
                f"(layer {layer}, {method}, beta {beta})",
                f"max |log-prob difference| {diff:.2e}; same top candidate in {agree}/{n}",
            )
        )
    # 2) a map fitted on shuffled pairs keeps the layer's statistics but no prompt's own answer
    perm = torch.randperm(states["train"].shape[0], generator=torch.Generator().manual_seed(0))
    shuffled = fit_least_squares(
        states["train"][:, li], states["train"][perm, -1], layer=layer, ridge=config.ridge
    )
    scores = shortcut_candidate_logprobs(
        model, states["test"][:, li], shuffled, firsts, tails, beta=beta
    )
    acc = sum(gold_first(s, g) for s, g in zip(scores, gold)) / len(gold)
    chance = sum(1 / len(f.candidates) for f in test) / len(test)
    controls.append(
        out.control(
            "any map into the final layer's region would rank answers this well",
            f"least squares at layer {layer} fitted on shuffled (h_l, h_L) training pairs",
            f"accuracy {acc:.3f} (chance {chance:.3f}; fitted map "
            f"{sum(result.correct[best]) / len(gold):.3f})",
        )
    )
    # 3) the identity map at the last layer is the model itself
    ident = identity_map(final, model.d_model)
    scores = shortcut_candidate_logprobs(model, states["test"][:, -1], ident, firsts, tails)
    same = sum(gold_first(s, g) == bool(c) for s, g, c in zip(scores, gold, base.correct))
    controls.append(
        out.control(
            "the decoding path differs from the model's own",
            f"identity map at layer {final} (the model itself) through the same scoring path",
            f"same correctness as the unmodified scorer on {same}/{len(gold)} held-out prompts",
        )
    )
    return controls


def _figures(out, curve, layers, base_acc, base_cons, betas) -> None:
    for idx, label in ((0, "accuracy"), (1, "consistency")):
        series = {}
        for method in ("least_squares", "jacobian"):
            for beta in betas:
                if not any((method, x, beta) in curve for x in layers):
                    continue
                ys = [curve.get((method, x, beta), (math.nan, math.nan))[idx] for x in layers]
                series[f"{method} (beta {beta:g})"] = (ys, ys, ys)
        base = [base_acc if idx == 0 else base_cons] * len(layers)
        series["unmodified model"] = (base, base, base)
        static, interactive = plots.lines_with_bands(
            layers, series, title=f"Shortcut {label} by layer", xlabel="layer", ylabel=label
        )
        out.figure(
            f"shortcut_{label}_by_layer",
            f"Shortcut {label} by layer",
            "Held-out facts ranked among their candidates with the final residual replaced by "
            "the layer-l state mapped linearly to the last layer; the flat line is the "
            "unmodified model. Consistency: mean over language pairs of |correct in both| / "
            "|correct in either|. The paper's claim is a band of late layers above the line.",
            static,
            interactive,
        )
