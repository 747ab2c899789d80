"""embedding-geometry: are a model's token embeddings organised by script?

After "Hyperpolyglot LLMs": the Unicode script of every vocabulary token; how linearly separable
the scripts are in the input embedding (and the unembedding, where it is not tied); for tokens
of each script, the share of their nearest tokens written in another script; and whether a
word's single-token translations (bundled ``words``) are among its nearest tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from experiments import register
from experiments.base import ExperimentConfig, ResultDir, seed_everything
from experiments.fields import Range, at_least
from interp import plots
from interp.analysis import embeddings as emb
from interp.data import load
from interp.model.architectures import get_submodule
from interp.model.footprint import Workload, held_vectors
from interp.model.models import LoadedModel

NAME = "embedding-geometry"


@dataclass
class EmbeddingConfig(ExperimentConfig):
    """Embedding-geometry settings on top of the shared experiment fields."""

    min_tokens: int = 500
    """Scripts with fewer tokens are left out of the classifier and the neighbour statistics."""
    probe_tokens: int = 2000
    """Tokens per script for the script classifier (30% held out)."""
    neighbour_queries: int = 200
    """Tokens per script whose nearest neighbours are searched."""
    neighbours: int = 50
    """Nearest neighbours per token."""
    chunk: int = 16384
    """Vocabulary rows per step of the neighbour search (memory: queries x chunk)."""

    _ranges: ClassVar[dict[str, Range]] = {
        "min_tokens": at_least(2),
        "probe_tokens": at_least(4),
        "neighbour_queries": at_least(1),
        "neighbours": at_least(1),
        "chunk": at_least(1),
    }


def workload(config: EmbeddingConfig, model: LoadedModel) -> Workload:
    """No forward pass: the analyses read the embedding (and unembedding) tables. Held: the
    neighbour search's unit queries, one chunk of unit rows and their similarities, or the
    script classifier's rows (standardised copies), whichever is larger."""
    scripts = emb.token_scripts(model.tokenizer)
    counts = emb.script_counts(scripts)
    kept = [s for s, n in counts.items() if n >= config.min_tokens and s not in emb.NO_SCRIPT]
    words = emb.single_token_words(model.tokenizer, load("words", config.langs))
    n_words = len({t for forms in words.values() for t in forms.values()})
    queries = max(sum(min(config.neighbour_queries, counts[s]) for s in kept), n_words)
    chunk = min(config.chunk, len(scripts))
    similarities = 2 * 4 * queries * (chunk + config.neighbours)  # with the running top-k
    search = queries + chunk + held_vectors(similarities, model.d_model)
    probe = 2 * sum(min(config.probe_tokens, counts[s]) for s in kept)
    return Workload((), held=max(search, probe))


@register(NAME, EmbeddingConfig, "token-embedding geometry by script", workload=workload)
def run(config: EmbeddingConfig) -> Path:
    """Run the experiment; returns the result directory."""
    seed_everything(config.seed)
    model = config.load_model()
    out = ResultDir(NAME, config)
    scripts = emb.token_scripts(model.tokenizer)
    counts = emb.script_counts(scripts)
    out.table("token_scripts", [{"script": s, "tokens": n} for s, n in counts.items()])
    shown = {s: n for s, n in counts.items() if n >= config.min_tokens}
    out.figure(
        "token_scripts",
        "Vocabulary tokens per script",
        f"Tokens whose letters are all in one script (scripts with at least {config.min_tokens} "
        "tokens; 'none': digits, punctuation, byte pieces; 'mixed': several scripts).",
        *plots.stacked_bars(
            list(shown),
            {"tokens": list(shown.values())},
            title="Tokens per script",
            xlabel="script",
            ylabel="tokens",
        ),
    )
    embed = get_submodule(model.hf, model.adapter.embed).weight.detach()
    # An encoder loads without a vocabulary head: its input embedding is the one table.
    unembed = model.unembed.weight.detach() if model.causal else embed
    tables = {"embedding": embed}
    tied = unembed.data_ptr() == embed.data_ptr()
    if not tied:
        tables["unembedding"] = unembed
    sep_rows, div_rows, results = [], [], {}
    for name, table in tables.items():
        sep = emb.script_separability(
            table,
            scripts,
            per_script=config.probe_tokens,
            min_tokens=config.min_tokens,
            seed=config.seed,
        )
        div = emb.neighbour_diversity(
            table,
            scripts,
            k=config.neighbours,
            per_script=config.neighbour_queries,
            min_tokens=config.min_tokens,
            seed=config.seed,
            chunk=config.chunk,
        )
        sep_rows += [
            {"matrix": name, "script": s, "held_out_recall": r} for s, r in sep.per_script.items()
        ]
        div_rows += [{"matrix": name, "script": s, **v} for s, v in div.items()]
        results[name] = {
            "separability_balanced_accuracy": sep.balanced_accuracy,
            "separability_chance": sep.chance,
            "separability_per_script": sep.per_script,
            "neighbours_other_script": {s: v["other_script"] for s, v in div.items()},
            "neighbours_other_script_chance": {s: v["chance"] for s, v in div.items()},
        }
        out.figure(
            f"neighbour_diversity_{name}",
            f"Nearest neighbours in another script ({name})",
            f"For tokens of each script, the share of their {config.neighbours} nearest tokens "
            "(cosine) written in another script, next to the share a random token would have.",
            *plots.stacked_bars(
                list(div),
                {"observed": [v["other_script"] for v in div.values()]},
                title=f"Share of neighbours in another script ({name})",
                xlabel="script",
                ylabel="share",
            ),
        )
    out.table("separability", sep_rows)
    out.table("neighbour_diversity", div_rows)

    words = emb.single_token_words(model.tokenizer, load("words", config.langs))
    near = emb.word_neighbours(embed, words, k=config.neighbours, chunk=config.chunk)
    langs, rate, n = emb.translation_neighbours(embed, words, k=config.neighbours, neighbours=near)
    word_scripts = emb.neighbour_scripts_by_language(words, near, scripts)
    eligible = {a: sum(a in forms for forms in words.values()) for a in langs}
    out.table(
        "translation_neighbours",
        [
            {"src": a, "tgt": b, "hit_rate": float(rate[i, j]), "n_words": int(n[i, j])}
            for i, a in enumerate(langs)
            for j, b in enumerate(langs)
            if a != b
        ],
    )
    matrix = rate.numpy().copy()
    matrix[n.numpy() == 0] = float("nan")
    out.figure(
        "translation_neighbours",
        "Is the translation among a word's nearest tokens?",
        f"Share of single-token words (row language) whose single-token translation (column "
        f"language) is among their {config.neighbours} nearest input-embedding tokens; "
        "pairs with identical tokens are left out.",
        *plots.heatmap(
            matrix,
            langs,
            langs,
            title="Translation among nearest tokens",
            xlabel="translation",
            ylabel="word",
            zlabel="hit rate",
            vmin=0,
            vmax=1,
        ),
    )
    per_lang = {
        a: float(rate[i][n[i] > 0].mean()) if (n[i] > 0).any() else None
        for i, a in enumerate(langs)
    }
    # Per language: how many words could be tested, and which scripts their neighbours are in
    # (a rate of 0 with many eligible words means the neighbours lie outside the studied
    # languages, e.g. Hindi words among Bengali tokens).
    top3 = {a: dict(list(shares.items())[:3]) for a, shares in word_scripts.items()}
    out.table(
        "translation_by_language",
        [
            {"lang": a, "single_token_words": eligible[a], "hit_rate": per_lang[a]}
            | {
                f"neighbour_script_{r + 1}": f"{s} {share:.2f}"
                for r, (s, share) in enumerate(top3.get(a, {}).items())
            }
            for a in langs
        ],
    )
    metrics = {
        "model": config.model,
        "vocab_size": len(scripts),
        "tied_embeddings": tied if model.causal else None,  # an encoder loads no head
        "tokens_per_script": counts,
        **results,
        "translation_hit_rate_per_language": per_lang,
        "single_token_words_per_language": eligible,
        "word_neighbour_scripts_top3": top3,
    }
    out.metrics(metrics)
    out.report("Token-embedding geometry by script", __doc__.split("\n\n")[1], metrics)
    return out.commit()
