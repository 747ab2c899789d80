"""factual-consistency: factual recall per language, its cross-lingual consistency and transition.

After "Cross-lingual Consistency of Factual Knowledge" (mLAMA-style candidate ranking), "Polyglot
or Not?" (true vs counterfactual), "Language Models' Factuality Depends on the Language of
Inquiry" and "Lost in Multilinguality" (the answer's language transition in the last layers): the
same facts asked in every language as few-shot clozes, scored three ways (greedy generation, the
gold answer's rank among candidates by summed log-prob, gold vs the best wrong candidate);
accuracy per language and relation with bootstrap intervals; per language pair the overlap and
top-k rank consistency; accuracy on a country's facts asked in its own language vs in others; and
per layer, under the logit lens, the answer's probability in the prompt's language vs in others.

The user's facts (``data``) come as the papers publish them, mLAMA's JSON lines or BMLAMA-17/53's
TSVs, or in polylens's own five-column TSV; ``interp.analysis.factual_data`` tells them apart.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from experiments import register
from experiments.base import ExperimentConfig, ResultDir, seed_everything
from experiments.fields import Range, above, at_least
from interp import plots
from interp.analysis.consistency import (
    grouped_accuracy,
    language_of_inquiry,
    overlap_consistency,
    pair_summary,
    rank_consistency,
)
from interp.analysis.fact_files import LAYOUTS, fact_file, facts_layout, read_facts_dir
from interp.analysis.factual import (
    candidate_passes,
    continuation,
    generation_correct,
    prior_correct,
    prior_inputs,
    rank_candidates,
)
from interp.analysis.factual_data import bundled_facts, country_languages, with_demonstrations
from interp.analysis.factual_lens import SET_NAMES, language_transition, takeover_layer
from interp.analysis.language_id import detect_languages
from interp.data.loader import dataset_sha256
from interp.errors import PolylensError
from interp.metrics import bootstrap_mean
from interp.model.footprint import Workload, forward_pass, held_vectors
from interp.model.models import LoadedModel

NAME = "factual-consistency"
SCORERS = ("generation", "rank", "counterfactual")


@dataclass
class FactualConfig(ExperimentConfig):
    """Factual-recall settings on top of the shared experiment fields."""

    data: str | None = None
    """Directory of the user's facts, in one of three layouts told apart by its files: mLAMA as
    published (``<lang>/templates.jsonl`` and ``<lang>/<relation>.jsonl``), BMLAMA-17/53 as
    shipped (``<lang>.tsv`` with Prompt, Ans, Candidate Ans, Subject) or polylens's own
    ``<lang>.tsv`` (id, relation, prompt with <mask>, answer, |-separated candidates); default:
    the bundled facts."""
    relations: list[str] | None = None
    """Relations to keep (default: all)."""
    n_per_relation: int | None = 6
    """Facts per relation, drawn with the seed (null: all)."""
    max_candidates: int = 8
    """Most candidates per bundled or mLAMA fact, the gold included (the relation's other
    objects); BMLAMA and polylens's own files list their own candidates."""
    n_demos: int = 3
    """Solved facts of the same relation and language before each prompt (never the fact)."""
    max_new_tokens: int = 6
    """Most tokens generated per answer (the generation scorer)."""
    top_k: int = 3
    """k of the top-k rank consistency."""
    transition: bool = True
    """Run the logit-lens language transition (one more forward pass of every prompt)."""
    bootstrap: int = 1000
    """Bootstrap resamples for the 95% intervals."""
    memory_budget_mb: float = 512
    """Most memory vocabulary-sized intermediates may take at once (candidates, lens)."""

    _ranges: ClassVar[dict[str, Range]] = {
        "n_per_relation": at_least(2),
        "max_candidates": at_least(2),
        "n_demos": at_least(0),
        "max_new_tokens": at_least(1),
        "top_k": at_least(1),
        "bootstrap": at_least(1),
        "memory_budget_mb": above(0),
    }
    needs_next_token: ClassVar[str | None] = "factual candidate scoring"

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.langs) < 2:
            raise PolylensError("factual-consistency needs at least two languages")


def load_facts(config: FactualConfig) -> tuple[list, str, dict[str, str]]:
    """Few-shot facts, the data's identity and ``{fact_id: country language}`` (bundled only)."""
    if config.data is not None:
        pool, layout = read_facts_dir(
            config.data, config.langs, relations=config.relations,
            max_candidates=config.max_candidates, seed=config.seed,
        )  # fmt: skip
        if config.relations is not None:
            pool = [f for f in pool if f.relation in config.relations]
            if not pool:
                raise PolylensError(
                    f"no fact in {config.data} has a relation in {config.relations}"
                )
        facts = pool
        if config.n_per_relation is not None:
            keep = _draw_ids(pool, config.n_per_relation, config.seed)
            facts = [f for f in pool if f.fact_id in keep]
        source = f"user:{Path(config.data).expanduser().resolve()} ({LAYOUTS[layout]})"
        fact_language = {}
    else:
        kwargs = dict(max_candidates=config.max_candidates, seed=config.seed)
        facts = bundled_facts(
            config.langs, n_per_relation=config.n_per_relation, relations=config.relations,
            **kwargs,
        )  # fmt: skip
        pool = bundled_facts(
            config.langs, n_per_relation=None, relations=config.relations, **kwargs
        )
        source = f"facts (sha256 {dataset_sha256('facts')[:12]})"
        fact_language = country_languages()
    return with_demonstrations(facts, config.n_demos, config.seed, pool=pool), source, fact_language


def _check_lengths(model, config: FactualConfig, facts) -> None:
    """Every prompt and its longest candidate fit the model's context, before any forward pass.

    Generation adds ``max_new_tokens`` on top of the prompt; the error names the fact and, for
    user data, its file.
    """
    prompts = model.tokenize([f.prompt for f in facts])
    lengths = []
    for f, ids in zip(facts, prompts):
        conts = [continuation(f.prompt, c, f.lang) for c in f.candidates]
        longest = max(len(c) for c in model.tokenizer(conts, add_special_tokens=False)["input_ids"])
        lengths.append(len(ids) + max(longest, config.max_new_tokens))

    def where(i: int) -> str:
        f = facts[i]
        if config.data is None:
            return f"bundled fact {f.fact_id!r} ({f.lang}, with its demonstrations and answer)"
        path = fact_file(config.data, facts_layout(config.data, config.langs), f)
        return f"facts file {path}: fact {f.fact_id!r} (with its demonstrations and answer)"

    model.check_context(lengths, where, remedy="shorten its prompt or lower n_demos")


def _draw_ids(facts, n: int, seed: int) -> set[str]:
    """``n`` fact ids per relation, drawn with the seed."""
    by_relation: dict[str, list[str]] = {}
    for f in facts:
        ids = by_relation.setdefault(f.relation, [])
        if f.fact_id not in ids:
            ids.append(f.fact_id)
    keep = set()
    for relation, ids in sorted(by_relation.items()):
        order = sorted(ids)
        random.Random(f"{seed}:{relation}").shuffle(order)
        keep |= set(order[:n])
    return keep


def workload(config: FactualConfig, model: LoadedModel) -> Workload:
    """Candidate ranking, greedy answers, the prior control and the lens transition.

    Upper bound: generation stops early when every prompt of a batch ends (the model's end of
    sequence); each answer is counted at ``max_new_tokens``. The rest is exact.
    """
    facts = load_facts(config)[0]
    prompts = [f.prompt for f in facts]
    conts = [[continuation(f.prompt, c, f.lang) for c in f.candidates] for f in facts]
    budget = dict(batch_size=config.batch_size, memory_budget_mb=config.memory_budget_mb)
    neutral, langs, by_lang = prior_inputs(model, facts)
    passes = [
        *candidate_passes(model, "rank", prompts, conts, **budget),
        forward_pass(
            model, "generation", prompts, batch_size=config.batch_size, logits="last",
            new_tokens=config.max_new_tokens,
        ),
        *candidate_passes(
            model, "prior control", neutral, [by_lang[x] for x in langs],
            batch_size=config.batch_size,
        ),
    ]  # fmt: skip
    held = held_vectors(config.memory_budget_mb * 2**20, model.d_model)
    if config.transition:
        passes.append(forward_pass(model, "lens transition", prompts, batch_size=config.batch_size))
        held += len(prompts) * model.n_layers
    return Workload(tuple(passes), held=held)


@register(
    NAME,
    FactualConfig,
    "factual recall per language, consistency, language of inquiry",
    workload=workload,
)
def run(config: FactualConfig) -> Path:
    """Run the experiment; returns the result directory."""
    seed_everything(config.seed)
    facts, source, fact_language = load_facts(config)
    model = config.load_model()
    _check_lengths(model, config, facts)
    out = ResultDir(NAME, config)
    langs = config.langs
    ranking = rank_candidates(
        model, facts, batch_size=config.batch_size, memory_budget_mb=config.memory_budget_mb
    )
    texts, gen_ok = generation_correct(
        model, facts, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size
    )
    prior_ok = prior_correct(model, facts, batch_size=config.batch_size)
    correct = {
        "generation": gen_ok,
        "rank": ranking.correct,
        "counterfactual": ranking.margin > 0,
        "prior (control)": prior_ok,
    }
    out.table("per_fact", _per_fact_rows(facts, ranking, texts, correct))
    accuracy, acc_rows = _accuracy(config, facts, correct)
    out.table("accuracy", acc_rows)
    _accuracy_figure(out, acc_rows, facts, langs)

    consistency, cons_rows = {}, []
    for scorer in SCORERS:
        outcome = {(f.fact_id, f.lang): bool(c) for f, c in zip(facts, correct[scorer])}
        matrix = overlap_consistency(outcome, langs)
        consistency[scorer] = pair_summary(matrix, langs)
        cons_rows += _matrix_rows(matrix, langs, scorer=scorer, metric="overlap")
        if scorer == "rank":
            _consistency_figure(out, matrix, langs, "overlap_consistency", "overlap (rank scorer)")
    keyed = {
        (f.fact_id, f.lang): tuple(f.keys[f.candidates.index(c)] for c in order)
        for f, order in zip(facts, ranking.ranking)
    }
    rank_matrix = rank_consistency(keyed, langs, config.top_k)
    consistency[f"rank_top{config.top_k}"] = pair_summary(rank_matrix, langs)
    cons_rows += _matrix_rows(rank_matrix, langs, scorer="rank", metric=f"top{config.top_k}")
    _consistency_figure(out, rank_matrix, langs, "rank_consistency", f"top-{config.top_k} overlap")
    out.table("consistency", cons_rows)

    inquiry = {}
    for scorer in ("rank", "generation") if fact_language else ():
        outcome = {(f.fact_id, f.lang): bool(c) for f, c in zip(facts, correct[scorer])}
        rows = language_of_inquiry(
            outcome, fact_language, langs, n_boot=config.bootstrap, seed=config.seed
        )
        if rows:
            inquiry[scorer] = rows
            out.table(f"language_of_inquiry_{scorer}", rows)
    if inquiry:
        _inquiry_figure(out, inquiry)
    else:
        out.notes.append(
            "Language of inquiry: skipped. It needs the bundled facts (user data carries no "
            "country per fact) and a fact about a country whose official language was asked."
        )

    transition = _transition(out, config, model, facts) if config.transition else {}
    metrics = _metrics(config, model, source, facts, accuracy, consistency, inquiry, transition)
    _controls(out, metrics, facts, ranking)
    out.metrics(metrics)
    out.report("Factual recall and cross-lingual consistency", __doc__.split("\n\n")[1], metrics)
    return out.commit()


def _per_fact_rows(facts, ranking, texts, correct) -> list[dict]:
    found = detect_languages(texts)
    return [
        {
            "fact_id": f.fact_id,
            "lang": f.lang,
            "relation": f.relation,
            "answer": f.answer,
            "generated": texts[i],
            "answer_language": found[i],
            "generation_correct": bool(correct["generation"][i]),
            "gold_rank": int(ranking.gold_rank[i]),
            "n_candidates": len(f.candidates),
            "gold_logprob": float(ranking.gold_logprob[i]),
            "best_wrong": ranking.best_wrong[i],
            "best_wrong_logprob": float(ranking.best_wrong_logprob[i]),
            "margin": float(ranking.margin[i]),
            "prior_correct": bool(correct["prior (control)"][i]),
        }
        for i, f in enumerate(facts)
    ]


def _accuracy(config, facts, correct) -> tuple[dict, list[dict]]:
    """Accuracy per scorer, per language and per language x relation, with intervals."""
    boot = dict(n_boot=config.bootstrap, seed=config.seed)
    summary, rows = {}, []
    for scorer, ok in correct.items():
        ok = ok.tolist()
        per_lang = grouped_accuracy(ok, [f.lang for f in facts], **boot)
        per_cell = grouped_accuracy(ok, [f"{f.lang}/{f.relation}" for f in facts], **boot)
        overall = grouped_accuracy(ok, ["all"] * len(facts), **boot)["all"]
        summary[scorer] = {"overall": overall, "per_lang": per_lang}
        for lang, v in per_lang.items():
            rows.append({"scorer": scorer, "lang": lang, "relation": "all", **v})
        for key, v in per_cell.items():
            lang, relation = key.split("/", 1)
            rows.append({"scorer": scorer, "lang": lang, "relation": relation, **v})
    return summary, rows


def _accuracy_figure(out: ResultDir, rows, facts, langs) -> None:
    relations = list(dict.fromkeys(f.relation for f in facts))
    for scorer in ("rank", "generation"):
        cell = {(r["lang"], r["relation"]): r["accuracy"] for r in rows if r["scorer"] == scorer}
        values = [[cell.get((lang, rel), math.nan) for rel in relations] for lang in langs]
        out.figure(
            f"accuracy_{scorer}",
            f"Accuracy per language and relation ({scorer} scorer)",
            "Share of facts answered right, per language (rows) and relation (columns). Compare "
            "rows for the language effect and with the prior control in the table accuracy.csv.",
            *plots.heatmap(
                values, langs, relations, title=f"Accuracy ({scorer})", xlabel="relation",
                ylabel="language", zlabel="accuracy", vmin=0, vmax=1,
            ),
        )  # fmt: skip


def _matrix_rows(matrix, langs, **fields) -> list[dict]:
    return [
        {**fields, "lang_a": a, "lang_b": b, "value": float(matrix[i, j])}
        for i, a in enumerate(langs)
        for j, b in enumerate(langs)
    ]


def _consistency_figure(out: ResultDir, matrix, langs, name: str, what: str) -> None:
    out.figure(
        name,
        f"Cross-lingual consistency: {what}",
        "Per language pair: overlap is |correct in both| / |correct in either| of the facts both "
        "were asked; top-k overlap is the mean share of the k best-ranked candidates that the "
        "two languages share (the same answers, mapped across languages).",
        *plots.heatmap(
            matrix.numpy(), langs, langs, title=what, xlabel="language", ylabel="language",
            zlabel=what, vmin=0, vmax=1,
        ),
    )  # fmt: skip


def _inquiry_figure(out: ResultDir, inquiry: dict) -> None:
    series = {}
    for scorer, rows in inquiry.items():
        series[scorer] = (
            [r["effect"] for r in rows],
            [r["ci_low"] for r in rows],
            [r["ci_high"] for r in rows],
        )
    cats = [f"{r['lang']} (n={r['n_facts']})" for r in next(iter(inquiry.values()))]
    out.figure(
        "language_of_inquiry",
        "Language of inquiry: own language minus other languages",
        "For the facts about countries whose official language is L: accuracy asked in L minus "
        "the mean accuracy asked in the other languages, with a 95% bootstrap interval over "
        "facts. Above zero: the country's facts are recalled better in its own language.",
        *plots.bars_with_intervals(
            cats, series, title="Own-language advantage", xlabel="language (facts)",
            ylabel="accuracy difference",
        ),
    )  # fmt: skip


def _transition(out: ResultDir, config, model, facts) -> dict:
    lens, _ = language_transition(
        model, facts, batch_size=config.batch_size, memory_budget_mb=config.memory_budget_mb
    )
    layers = lens.layers
    probs = {name: lens.probs(name) for name in SET_NAMES}
    rows, per_lang, series = [], {}, {}
    groups = {"all": list(range(len(facts)))}
    for lang in config.langs:
        groups[lang] = [i for i, f in enumerate(facts) if f.lang == lang]
    for group, idx in groups.items():
        curves = {
            name: bootstrap_mean(p[idx], config.bootstrap, config.seed) for name, p in probs.items()
        }
        take = takeover_layer(curves["own"][0], curves["other"][0], layers)
        per_lang[group] = take
        for li, layer in enumerate(layers):
            rows.append(
                {"group": group, "layer": layer}
                | {f"{n}_{s}": float(c[k][li]) for n, c in curves.items()
                   for k, s in enumerate(("mean", "ci_low", "ci_high"))}
            )  # fmt: skip
        if group == "all":
            series = {
                f"answer in {label}": tuple(t.tolist() for t in curves[name])
                for name, label in (
                    ("own", "prompt language"), ("other", "other languages"), ("en", "English"),
                )
            }  # fmt: skip
    out.table("language_transition", rows)
    out.table("takeover", [{"group": g, "takeover_layer": t} for g, t in per_lang.items()])
    out.figure(
        "language_transition",
        "Language transition of the answer under the logit lens",
        "Mean probability (95% bootstrap band over prompts) of the answer's first token in the "
        "prompt's language, of the same answer in the other languages and in English, decoded "
        "at every layer. The takeover layer is where the prompt's language goes above the "
        f"others for good: {per_lang['all']}.",
        *plots.lines_with_bands(
            layers, series, title="Answer language by layer", xlabel="layer",
            ylabel="probability",
        ),
    )  # fmt: skip
    return {"takeover_layer": per_lang, "n_layers": len(layers)}


def _metrics(config, model, source, facts, accuracy, consistency, inquiry, transition) -> dict:
    metrics = {
        "model": config.model,
        "source": source,
        "n_facts": len({f.fact_id for f in facts}),
        "n_langs": len(config.langs),
        "n_prompts": len(facts),
        "mean_candidates": sum(len(f.candidates) for f in facts) / len(facts),
    }
    for scorer in (*SCORERS, "prior (control)"):
        key = scorer.split(" ")[0]
        metrics[f"accuracy_{key}"] = accuracy[scorer]["overall"]["accuracy"]
    for scorer, summary in consistency.items():
        metrics[f"consistency_{scorer}_mean"] = summary["mean"]
        metrics[f"consistency_{scorer}_min"] = summary["min"]
        metrics[f"consistency_{scorer}_max"] = summary["max"]
    if inquiry:
        pooled = inquiry["rank"][-1]
        metrics["inquiry_effect_rank"] = pooled["effect"]
        metrics["inquiry_effect_rank_ci_low"] = pooled["ci_low"]
        metrics["inquiry_effect_rank_ci_high"] = pooled["ci_high"]
        metrics["X-FaKT_rank"] = pooled["X-FaKT"]
    if transition:
        metrics["takeover_layer"] = transition["takeover_layer"]["all"]
    metrics["accuracy"] = {
        scorer: {lang: v["accuracy"] for lang, v in acc["per_lang"].items()}
        for scorer, acc in accuracy.items()
    }
    metrics["consistency"] = consistency
    metrics["language_of_inquiry"] = inquiry
    metrics["transition"] = transition
    return _no_nan(metrics)


def _no_nan(value):
    """``value`` with every NaN float as None (null in metrics.json: no data, e.g. no pair)."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def _controls(out: ResultDir, metrics: dict, facts, ranking) -> None:
    chance = sum(1 / len(f.candidates) for f in facts) / len(facts)
    out.control(
        "answers that are simply frequent (a prior over candidates) would rank first anyway",
        "candidate-frequency baseline: the candidate most probable after a neutral prompt",
        f"prior accuracy {metrics['accuracy_prior']:.3f} vs rank accuracy "
        f"{metrics['accuracy_rank']:.3f} (chance {chance:.3f})",
    )
    margin = float(ranking.margin[ranking.margin.isfinite()].mean())
    out.control(
        "true vs counterfactual restates the rank scorer",
        "gold vs the best wrong candidate wins exactly when the gold ranks first; its own "
        "content is the log-prob margin",
        f"mean margin {margin:.3f} nats; accuracies agree: "
        f"{metrics['accuracy_counterfactual']:.3f} vs {metrics['accuracy_rank']:.3f}",
    )
