"""refusal-direction: one refusal direction per language, its effects and its transfer.

After Arditi et al. 2024 ("Refusal in LLMs is mediated by a single direction") and PolyRefuse
(2025, "Refusal direction is universal across safety-aligned languages"): per language,
diff-in-means candidates at every layer and post-instruction position, selected on a validation
split by bypass, induce and KL; its ablation and addition measured on held-out test instructions
(refusal score and a phrase-matching generation judge); the cosine of the languages' directions
at every layer, and the transfer grid of one language's direction edited in another.

The user's instructions (``data``) come as the papers publish them, Arditi et al.'s English splits
and PolyRefuse's translated ones, or in polylens's own per-language files.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from experiments import register
from experiments.base import ExperimentConfig, ResultDir, seed_everything
from experiments.fields import Range, above, at_least
from interp import plots
from interp.analysis.direction_effects import (
    cosine_by_layer,
    held_out_effects,
    held_out_passes,
    orthogonalization_gap,
    orthogonalization_passes,
    shared_position,
    transfer_grid,
    transfer_passes,
)
from interp.analysis.directions import (
    diff_in_means,
    post_instruction_acts,
    random_direction_kl,
    random_direction_passes,
    score_candidates,
    score_candidates_passes,
    select_direction,
    spare_top_dimensions,
    top_dimension_share,
)
from interp.analysis.refusal import (
    SAFETY_LAYOUTS,
    make_template,
    opener_token_ids,
    post_instruction_count,
    read_published_splits,
    read_user_data,
    safety_layout,
    split_items,
)
from interp.data import load
from interp.data.loader import dataset_sha256, split_of
from interp.errors import PolylensError
from interp.model.footprint import Workload, forward_pass, held_vectors
from interp.model.models import LoadedModel
from interp.storage.store import ActivationStore

NAME = "refusal-direction"


@dataclass
class RefusalConfig(ExperimentConfig):
    """Refusal-direction settings on top of the shared experiment fields."""

    template: Literal["incontext", "chat"] = "incontext"
    """incontext (a few-shot dialogue that refuses harmful asks; any model) or chat (the
    model's own chat template)."""
    data: str | None = None
    """Directory of user data, each file a JSON list of {"instruction": ..., "category": ...}:
    Arditi et al.'s splits ({harmful,harmless}_{train,val,test}.json, English), PolyRefuse's
    ({harmful,harmless}_{train,val,test}_translated_<lang>.json) or polylens's own
    harmful_<lang>.json and harmless_<lang>.json (default: the bundled safety set)."""
    n_train: int = 80
    """Most instructions per class and language for the diff-in-means candidates."""
    n_val: int = 16
    """Instructions per class and language that select the direction."""
    n_test: int = 20
    """Held-out instructions per class and language that measure its effects."""
    layer_stride: int = 1
    """Score candidates of every k-th layer only (1: all layers; larger is faster)."""
    layers: list[int] | None = None
    """Score candidates of these layers only (overrides layer_stride): e.g. the layer found in
    one language, to compare every language's direction there."""
    kl_max: float = 0.1
    """Candidates whose ablation moves the harmless next-token distribution more are dropped."""
    prune_fraction: float = 0.2
    """Candidates in this last share of the layers are dropped."""
    coeff: float = 1.0
    """Coefficient of the activation addition."""
    rows_per_pass: int = 64
    """Rows per forward pass while scoring: prompt copies of several candidates stacked."""
    n_generate: int = 4
    """Test instructions per condition and language that are generated and judged."""
    max_new_tokens: int = 24
    """Most tokens generated per answer."""
    spare_top_dims: int = 0
    """Zero each candidate's components on the k residual dimensions with the largest mean
    square at its layer and position (0: the paper's directions; 3 spares Gemma 3's massive
    dimensions, whose ablation breaks the model whatever the direction)."""

    _ranges: ClassVar[dict[str, Range]] = {
        **ExperimentConfig._ranges,
        "n_train": at_least(2),
        "n_val": at_least(1),
        "n_test": at_least(1),
        "layer_stride": at_least(1),
        "kl_max": above(0),
        "prune_fraction": Range(0, 1, hi_open=True),
        "rows_per_pass": at_least(1),
        "n_generate": at_least(0),
        "max_new_tokens": at_least(1),
        "spare_top_dims": at_least(0),
    }
    needs_next_token: ClassVar[str | None] = "the refusal direction"


def candidate_layers(config: RefusalConfig, n_layers: int) -> list[int]:
    """The layers whose candidates are scored: ``layers``, or every ``layer_stride``-th."""
    if config.layers is None:
        return list(range(0, n_layers, config.layer_stride))
    bad = [x for x in config.layers if not 0 <= x < n_layers]
    if bad or not config.layers:
        raise PolylensError(
            f"config field layers: {bad[0] if bad else 'empty'}; give layers from 0 to "
            f"{n_layers - 1} (the model has {n_layers})"
        )
    return sorted(set(config.layers))


def load_splits(config: RefusalConfig) -> tuple[dict[str, dict[str, dict[str, list[str]]]], str]:
    """``{lang: {"harmful"|"harmless": {"train"|"val"|"test": [...]}}}`` and the data's identity.

    Bundled data keeps its own test split (the same items in every language) and draws val
    from its train split with the seed. User data in Arditi et al.'s or PolyRefuse's published
    splits keeps them: train for the candidates, val for the selection, test for the effects
    (``read_published_splits``); polylens's own per-language files are split with the seed.
    """
    need = config.n_val + config.n_test + 2
    out: dict = {}
    if config.data is not None:
        layout = safety_layout(config.data)
        data_id = f"user:{Path(config.data).expanduser().resolve()} ({SAFETY_LAYOUTS[layout]})"
        if layout != "polylens":
            splits = read_published_splits(
                config.data, config.langs, n_train=config.n_train, n_val=config.n_val,
                n_test=config.n_test, seed=config.seed,
            )  # fmt: skip
            return splits, data_id
        for lang, (harmful, harmless) in read_user_data(
            config.data, config.langs, need=need
        ).items():
            out[lang] = {
                kind: split_items(
                    items, n_val=config.n_val, n_test=config.n_test, seed=config.seed,
                    n_train=config.n_train,
                )
                for kind, items in (("harmful", harmful), ("harmless", harmless))
            }  # fmt: skip
        return out, data_id
    records = load("safety", langs=config.langs)
    for kind, harmful in (("harmful", True), ("harmless", False)):
        ids = sorted({r.id for r in records if r.harmful == harmful})
        test = [i for i in ids if split_of(i) == "test"][: config.n_test]
        rest = [i for i in ids if split_of(i) != "test"]
        random.Random(config.seed).shuffle(rest)
        val, train = rest[: config.n_val], rest[config.n_val :][: config.n_train]
        if len(test) < config.n_test or len(train) < 2:
            raise PolylensError(
                f"the bundled safety set has {len(ids)} {kind} instructions per language: too few "
                f"for n_test={config.n_test} (its test split) and n_val={config.n_val} plus 2 "
                "for training; lower them or pass data"
            )
        text = {(r.id, r.lang): r.text for r in records}
        for lang in config.langs:
            out.setdefault(lang, {})[kind] = {
                split: [text[(i, lang)] for i in chosen]
                for split, chosen in (("train", train), ("val", val), ("test", test))
            }
    return out, f"safety:{dataset_sha256('safety')[:12]}"


def _check_lengths(model, config: RefusalConfig, splits: dict) -> None:
    """Refuse, before any forward pass, an instruction that cannot fit the model's context."""
    names, prompts = [], []
    for lang in config.langs:
        template = make_template(model, lang, config.template)
        for kind, by_split in splits[lang].items():
            for split, items in by_split.items():
                names += [f"{kind} {split} instruction {t[:40]!r}... ({lang})" for t in items]
                prompts += template.wrap(items)
    # Room for the generated answer too (the val and test splits are generated from).
    model.check_context(
        [len(ids) + config.max_new_tokens for ids in model.tokenize(prompts)],
        lambda i: f"{names[i]}, in its template and with max_new_tokens={config.max_new_tokens},",
        remedy="shorten or drop that instruction",
    )


def workload(config: RefusalConfig, model: LoadedModel) -> Workload:
    """Per language: training residuals (store-cached), every candidate scored, the random
    directions' KL, the held-out effects and generations; then the transfer grid and the
    orthogonalization check. Upper bound: near-zero candidates (layer 0 of most models) are
    not scored, and generation stops at the end of the turn; both are counted in full."""
    splits, rows = load_splits(config)[0], dict(rows_per_pass=config.rows_per_pass)
    n_layers, kinds = model.n_layers, ("harmful", "harmless")
    passes, tests, residuals, candidates = [], [], 0, 0
    for lang in config.langs:
        s, t = splits[lang], make_template(model, lang, config.template)
        train = [t.wrap(s[kind]["train"]) for kind in kinds]
        n_post = post_instruction_count(model, [*train[0], *train[1]])
        passes += [
            forward_pass(model, f"training residuals ({kind})", prompts,
                         batch_size=config.batch_size, stored=n_post * n_layers)
            for kind, prompts in zip(kinds, train)
        ]  # fmt: skip
        val = [t.wrap(s[kind]["val"]) for kind in kinds]
        k = len(candidate_layers(config, n_layers)) * n_post
        passes += score_candidates_passes(model, "candidates", *val, candidates=k, **rows)
        passes += random_direction_passes(model, "random directions", val[1], **rows)
        passes += held_out_passes(
            model, t, s["harmful"]["test"], s["harmless"]["test"], n_generate=config.n_generate,
            max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, **rows,
        )  # fmt: skip
        tests.append(tuple(t.wrap(s[kind]["test"]) for kind in kinds))
        # one language's residuals at a time; every language's candidates kept (float64)
        residuals = max(residuals, (len(train[0]) + len(train[1])) * n_post * n_layers)
        candidates += 2 * n_post * n_layers
    passes += transfer_passes(model, len(config.langs), tests, **rows)
    passes += orthogonalization_passes(model, tests[0][0][:4])
    held = residuals + candidates
    if not model.adapter.orthogonalize_refusal:  # the check holds a copy of the weights
        weights = sum(p.numel() * p.element_size() for p in model.hf.parameters())
        held += held_vectors(weights, model.d_model)
    return Workload(tuple(passes), held=held)


@register(
    NAME,
    RefusalConfig,
    "refusal direction per language: selection, ablation, transfer",
    workload=workload,
)
def run(config: RefusalConfig) -> Path:
    """Run the experiment; returns the result directory."""
    seed_everything(config.seed)
    splits, data_id = load_splits(config)
    model = config.load_model()
    _check_lengths(model, config, splits)
    store = ActivationStore(config.store)
    langs = config.langs
    layers = candidate_layers(config, model.n_layers)
    out = ResultDir(NAME, config)

    per_lang, score_rows, effect_rows, examples = {}, [], [], []
    directions, chosen, openers, templates, all_cands, labels = {}, {}, {}, {}, {}, {}
    for lang in tqdm(langs, desc=NAME, unit="lang"):
        s, t = splits[lang], make_template(model, lang, config.template)
        templates[lang] = t
        train_h, train_n = t.wrap(s["harmful"]["train"]), t.wrap(s["harmless"]["train"])
        n_post = post_instruction_count(model, [*train_h, *train_n])
        post_ids = model.tokenize(train_h[:1])[0][-n_post:]
        pos_labels = [
            f"{p - n_post} {model.tokenizer.decode([tok])!r}" for p, tok in enumerate(post_ids)
        ]
        kw = dict(batch_size=config.batch_size, store=store)
        harmful_resid = post_instruction_acts(model, train_h, n_post, **kw)
        harmless_resid = post_instruction_acts(model, train_n, n_post, **kw)
        cands = spare_top_dimensions(
            diff_in_means(harmful_resid, harmless_resid), harmless_resid, config.spare_top_dims
        )
        openers[lang] = opener_token_ids(model, t)
        scores = score_candidates(
            model,
            cands,
            t.wrap(s["harmful"]["val"]),
            t.wrap(s["harmless"]["val"]),
            openers[lang],
            layers=layers,
            rows_per_pass=config.rows_per_pass,
            progress=True,
        )
        sel = select_direction(
            scores, model.n_blocks, kl_max=config.kl_max, prune_fraction=config.prune_fraction
        )
        random_kl = random_direction_kl(
            model, t.wrap(s["harmless"]["val"]), openers[lang], seed=config.seed,
            rows_per_pass=config.rows_per_pass,
        )  # fmt: skip
        for row in scores.rows(pos_labels):
            p = pos_labels.index(row["pos"])
            score_rows.append({"lang": lang, **row, "status": sel.reasons[row["layer"], p]})
        direction = cands[sel.layer, sel.pos].float()
        on_top, top_power = top_dimension_share(direction, harmless_resid[:, sel.pos, sel.layer])
        directions[lang], chosen[lang], all_cands[lang] = direction, (sel.layer, sel.pos), cands
        labels[lang] = pos_labels
        effects, generated = held_out_effects(
            model,
            t,
            direction,
            sel.layer,
            s["harmful"]["test"],
            s["harmless"]["test"],
            openers[lang],
            coeff=config.coeff,
            n_generate=config.n_generate,
            max_new_tokens=config.max_new_tokens,
            rows_per_pass=config.rows_per_pass,
            batch_size=config.batch_size,
        )
        examples += generated
        per_lang[lang] = {
            "selected_layer": sel.layer,
            "selected_pos": pos_labels[sel.pos],
            "filters_relaxed": sel.relaxed,
            "direction_norm": float(direction.norm()),
            "val_baseline_harmful": scores.baseline_harmful,
            "val_baseline_harmless": scores.baseline_harmless,
            "val_bypass": float(scores.bypass[sel.layer, sel.pos]),
            "val_induce": float(scores.induce[sel.layer, sel.pos]),
            "val_kl": float(scores.kl[sel.layer, sel.pos]),
            "val_kl_min_candidate": float(np.nanmin(scores.kl)),
            "val_kl_random_directions": float(random_kl.mean()),
            "direction_share_on_top3_residual_dims": on_top,
            "top3_residual_dims_share_of_residual": top_power,
            **effects,
            "openers": model.tokenizer.convert_ids_to_tokens(openers[lang]),
            "n_post_instruction_tokens": n_post,
            "sizes": {f"{c}_{k}": len(v) for c in s for k, v in s[c].items()},
        }
        effect_rows.append({"lang": lang, **{k: v for k, v in per_lang[lang].items()
                                             if not isinstance(v, (list, dict))}})  # fmt: skip
        _score_figures(out, lang, scores, sel, pos_labels)
    out.table("candidate_scores", score_rows)
    out.table("effects", effect_rows)
    out.table("examples", examples)
    _report_tables(out, per_lang, examples)

    metrics = _across_languages(out, langs, all_cands, directions, chosen, labels)
    grid = transfer_grid(
        model,
        torch.stack([directions[lang] for lang in langs]),
        [chosen[lang][0] for lang in langs],
        [(templates[b].wrap(splits[b]["harmful"]["test"]),
          templates[b].wrap(splits[b]["harmless"]["test"])) for b in langs],
        [openers[b] for b in langs],
        coeff=config.coeff,
        rows_per_pass=config.rows_per_pass,
        progress=True,
    )  # fmt: skip
    _transfer_outputs(out, langs, grid, metrics)
    first = langs[0]
    gap = orthogonalization_gap(
        model, directions[first], templates[first].wrap(splits[first]["harmful"]["test"][:4])
    )
    metrics |= {
        "model": config.model,
        "template": config.template,
        "data": data_id,
        "orthogonalization_max_logprob_gap": gap,
        "orthogonalization": "not supported by this architecture" if gap is None else "checked",
        "mean_auroc_before": float(np.mean([v["auroc_before"] for v in per_lang.values()])),
        "mean_auroc_after_ablation": float(
            np.mean([v["auroc_after_ablation"] for v in per_lang.values()])
        ),
        "per_language": per_lang,
    }
    metrics["controls"] = [_kl_control(out, config, per_lang)]
    out.metrics(metrics)
    out.report("Refusal direction across languages", __doc__.split("\n\n")[1], metrics)
    return out.commit()


_EFFECT_COLUMNS = {
    "layer": "selected_layer",
    "position": "selected_pos",
    "relaxed": "filters_relaxed",
    "AUROC before": "auroc_before",
    "AUROC ablated": "auroc_after_ablation",
    "harmful score before": "harmful_score_before",
    "harmful score ablated": "harmful_score_after_ablation",
    "harmless score before": "harmless_score_before",
    "harmless score added": "harmless_score_after_addition",
    "harmless KL ablated": "harmless_kl_under_ablation",
    "harmful refused": "judge_refusal_harmful",
    "harmful refused ablated": "judge_refusal_harmful+ablation",
    "harmless refused": "judge_refusal_harmless",
    "harmless refused added": "judge_refusal_harmless+addition",
}


def _report_tables(out: ResultDir, per_lang: dict, examples: list[dict]) -> None:
    """The per-language effects and one example generation per condition and language."""
    out.report_table(
        "Per language: the selected direction and its effects on test prompts",
        "AUROC: refusal score of harmful vs harmless test prompts, plain and with the direction "
        "ablated; scores are log P(opener) - log(1 - P(opener)); 'relaxed': no candidate passed "
        "every filter; 'refused': share of the generated answers the phrase judge calls a "
        "refusal (n_generate per condition).",
        [{"lang": lang, **{col: v.get(key) for col, key in _EFFECT_COLUMNS.items()}}
         for lang, v in per_lang.items()],
    )  # fmt: skip
    first = {}
    for e in examples:
        first.setdefault((e["lang"], e["condition"]), e)
    out.report_table(
        "Example generations",
        "The first greedy answer per language and condition (all of them: tables/examples.csv); "
        "'refused': the phrase judge; 'answer language': lingua's (blank: cannot tell).",
        [{"lang": e["lang"], "condition": e["condition"], "instruction": e["instruction"],
          "answer": e["answer"], "answer language": e["answer_language"] or "",
          "refused": e["judged_refusal"], "score": e["refusal_score"]}
         for e in first.values()],
    )  # fmt: skip


def _kl_control(out: ResultDir, config: RefusalConfig, per_lang: dict) -> dict:
    """Is a candidate's KL its direction's, or what ablating any direction costs?"""
    relaxed = [lang for lang, v in per_lang.items() if v["filters_relaxed"]]
    mean = {
        key: float(np.mean([v[key] for v in per_lang.values()]))
        for key in ("val_kl", "val_kl_min_candidate", "val_kl_random_directions")
    }
    return out.control(
        f"The KL filter (<= {config.kl_max}) judges a direction by how much its ablation moves "
        "harmless next-token distributions; ablating any direction at every layer moves them "
        "somewhat.",
        "KL of 4 random unit directions ablated the same way, on the same validation prompts.",
        f"mean over languages: random directions {mean['val_kl_random_directions']:.4f}, "
        f"lowest candidate {mean['val_kl_min_candidate']:.4f}, selected "
        f"{mean['val_kl']:.4f}; filters relaxed in {len(relaxed)} of {len(per_lang)} "
        f"languages{' (' + ', '.join(relaxed) + ')' if relaxed else ''}",
    )


def _score_figures(out: ResultDir, lang: str, scores, sel, pos_labels: list[str]) -> None:
    layers = [str(i) for i in range(scores.bypass.shape[0])]
    for name, values, what in (
        ("bypass", scores.bypass, "harmful refusal score under ablation (lower is better)"),
        ("induce", scores.induce, "harmless refusal score under addition (must be > 0)"),
        ("kl", scores.kl, "KL of harmless next-token distribution under ablation (<= kl_max)"),
    ):
        out.figure(
            f"candidates_{name}_{lang}",
            f"{lang}: {name} score of every candidate",
            f"{what}; layer x post-instruction position, blank where not scored. Selected: "
            f"layer {sel.layer}, position {pos_labels[sel.pos]}"
            + (" (no candidate passed every filter; relaxed)" if sel.relaxed else "")
            + ".",
            *plots.heatmap(
                values,
                layers,
                pos_labels,
                title=f"{name} ({lang})",
                xlabel="post-instruction position",
                ylabel="layer",
                zlabel=name,
            ),
        )


def _across_languages(out, langs, all_cands, directions, chosen, labels) -> dict:
    """Cosine of the languages' directions at every layer, at the most often chosen position.

    Positions are offsets from the prompt's end: languages' templates tokenize to different
    numbers of post-instruction tokens, and an index from the first of them means another
    token (or none) in another language (``interp.analysis.direction_effects.shared_position``).
    """
    n_pos = [all_cands[lang].shape[1] for lang in langs]
    pos = shared_position([chosen[lang][1] - n for lang, n in zip(langs, n_pos)], n_pos)
    layer = Counter(layer for layer, _ in chosen.values()).most_common(1)[0][0]
    per_layer = cosine_by_layer(torch.stack([all_cands[lang][:, pos] for lang in langs]).double())
    per_layer = torch.nan_to_num(per_layer, nan=0.0).numpy()
    off = ~np.eye(len(langs), dtype=bool)
    metrics = {
        "cosine_layer": layer,
        "cosine_position_index": pos,
        "cosine_position_tokens": {lang: labels[lang][pos] for lang in langs},
    }
    if len(langs) > 1:
        at = per_layer[layer][off]
        metrics |= {"cosine_min_at_layer": float(at.min()), "cosine_max_at_layer": float(at.max())}
    selected = cosine_by_layer(torch.stack([directions[lang] for lang in langs])[:, None])[0]
    metrics["cosine_selected_directions"] = {
        f"{a}-{b}": float(selected[i, j]) for i, a in enumerate(langs) for j, b in enumerate(langs)
        if i < j
    }  # fmt: skip
    out.table(
        "cosine_by_layer",
        [{"layer": li, "a": a, "b": b, "cosine": float(per_layer[li, i, j])}
         for li in range(per_layer.shape[0]) for i, a in enumerate(langs)
         for j, b in enumerate(langs)],
    )  # fmt: skip
    out.figure(
        "cosine_by_layer",
        "Cosine of the languages' refusal directions, layer by layer",
        "Diff-in-means directions of each pair of languages at every layer, at the most often "
        f"selected post-instruction position that every language has (offset {pos} from the "
        "prompt's end). High off-diagonal values across layers are the 'universal refusal "
        "direction' of PolyRefuse.",
        *plots.heatmaps_by_layer(
            per_layer, langs, langs, list(range(per_layer.shape[0])),
            title="cosine of refusal directions", xlabel="language", ylabel="language",
            zlabel="cosine", vmin=-1, vmax=1,
        ),
    )  # fmt: skip
    return metrics


def _transfer_outputs(out: ResultDir, langs: list[str], grid: dict, metrics: dict) -> None:
    off = ~np.eye(len(langs), dtype=bool)
    rows = []
    for i, a in enumerate(langs):
        for j, b in enumerate(langs):
            rows.append({"source": a, "target": b, **{k: float(v[i, j]) for k, v in grid.items()}})
    out.table("transfer_grid", rows)
    for key, title, what in (
        ("ablation_share", "share of the target's refusal drop", "drop from the source's "
         "direction / drop from the target's own (1 = as good as its own)"),
        ("addition_gain", "harmless refusal gain from addition", "mean refusal score of the "
         "target's harmless prompts with the source's vector added, minus plain"),
    ):  # fmt: skip
        out.figure(
            f"transfer_{key}",
            f"Transfer grid: {title}",
            f"Row: the language whose direction is edited; column: the language of the prompts. "
            f"{what}.",
            *plots.heatmap(
                grid[key], langs, langs, title=title, xlabel="target (prompts)",
                ylabel="source (direction)", zlabel=key,
            ),
        )  # fmt: skip
    own_drop = float(np.diag(grid["ablation_drop"]).mean())
    if len(langs) > 1:
        off_drop = float(grid["ablation_drop"][off].mean())
        metrics["transfer_share_mean_offdiag"] = float(np.nanmean(grid["ablation_share"][off]))
        # A target whose own drop is near zero makes its shares huge: the median and the
        # ratio of mean drops are the robust summaries.
        metrics["transfer_share_median_offdiag"] = float(np.nanmedian(grid["ablation_share"][off]))
        metrics["transfer_drop_ratio_offdiag_to_own"] = off_drop / own_drop
        metrics["transfer_drop_mean_offdiag"] = off_drop
        metrics["transfer_addition_gain_mean_offdiag"] = float(grid["addition_gain"][off].mean())
    metrics["own_drop_mean"] = own_drop
