"""mid-layer-alignment: how alike are a sentence's representations across languages, layer by layer?

After "Middle-Layer Representation Alignment for Cross-Lingual Transfer" and "Similarity of
Sentence Representations in Multilingual LMs": on parallel sentences, for every layer and ordered
language pair, the aligned-minus-random cosine, translation retrieval (P@1 by cosine and by ratio
margin), linear CKA and SVCCA, with mean and last-token pooling, raw and per-language mean-centred;
the peak layer of each metric per pair and per pair group, and how each metric follows language
relatedness (same script, same family).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import matplotlib.pyplot as plt
import torch

from experiments import register
from experiments.base import ExperimentConfig, ResultDir, seed_everything
from experiments.fields import Range, at_least
from interp import plots
from interp.analysis import language_pairs as pairs
from interp.analysis import similarity as sim
from interp.data import load
from interp.data.loader import dataset_sha256
from interp.data.user import read_parallel
from interp.errors import PolylensError
from interp.model.footprint import Workload, forward_pass
from interp.model.models import LoadedModel
from interp.storage.store import ActivationStore

NAME = "mid-layer-alignment"
LABELS = {
    "cos_gap": "aligned - random cosine",
    "p1_cos": "retrieval P@1 (cosine)",
    "p1_margin": "retrieval P@1 (ratio margin)",
    "cka": "linear CKA",
    "svcca": "SVCCA",
}


@dataclass
class AlignmentConfig(ExperimentConfig):
    """Similarity settings on top of the shared experiment fields."""

    parallel_dir: str | None = None
    """Directory of the user's line-aligned files: ``<lang>.txt`` per language, a FLORES+ folder
    (``devtest/devtest.eng_Latn``, ...) or an NTREX-128 folder (``newstest2019-ref.deu.txt``,
    ...); default: the bundled parallel set."""
    parallel_split: Literal["dev", "devtest"] = "devtest"
    """The FLORES+ split read from a FLORES+ ``parallel_dir`` (other layouts ignore it)."""
    n_sentences: int | None = None
    """Use the first n sentences (default: all)."""
    poolings: list[Literal["mean", "last"]] = field(default_factory=lambda: ["mean"])
    """Sentence poolings: mean over tokens (leading BOS left out) and/or the last token."""
    k: int = 4
    """Nearest neighbours in the ratio margin's denominator."""
    variance: float = 0.99
    """Share of the variance SVCCA's SVD step keeps."""
    svcca_max_components: int | None = 20
    """At most this many SVD directions per language in SVCCA (null: no cap). Keep it well below
    n_sentences: CCA of k directions out of n sentences nears 1 for unrelated data as k nears n
    (152 sentences, 640-d residuals: the 99% rule alone keeps ~all 152 and saturates at 1)."""

    _ranges: ClassVar[dict[str, Range]] = {
        "n_sentences": at_least(2),
        "k": at_least(1),
        "variance": Range(0, 1, lo_open=True),
        "svcca_max_components": at_least(1),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.poolings:
            raise PolylensError("config field poolings is empty; use mean, last or both")
        if len(self.langs) < 2:
            raise PolylensError("mid-layer-alignment needs at least two languages")
        if self.n_sentences is not None and self.k >= self.n_sentences:
            raise PolylensError("config field k must be smaller than n_sentences")


def _sentences(config: AlignmentConfig) -> tuple[dict[str, list[str]], str, dict[str, Path]]:
    """The sentences per language, where they came from, and the user's file per language."""
    paths: dict[str, Path] = {}
    if config.parallel_dir is not None:
        text = read_parallel(config.parallel_dir, config.langs, config.parallel_split)
        data, paths = text.sentences, text.paths
        source = f"{config.parallel_dir} ({text.layout})"
        where = f"parallel directory {config.parallel_dir}"
    else:
        records = load("parallel", config.langs)
        data = {lang: [r.text for r in records if r.lang == lang] for lang in config.langs}
        source = f"parallel (sha256 {dataset_sha256('parallel')[:12]})"
        where = "the bundled parallel set"
    n = len(next(iter(data.values())))
    if n < 2:
        raise PolylensError(f"{where} has {n} sentence(s) per language; give at least 2")
    if config.k >= n:
        # The config checks k against n_sentences; the data's own count is known only now.
        raise PolylensError(
            f"{where} has {n} sentences per language; k={config.k} must be smaller (the ratio "
            "margin compares each sentence with its k nearest others); lower k or add sentences"
        )
    if config.n_sentences is not None:
        n = min(n, config.n_sentences)
    return {lang: lines[:n] for lang, lines in data.items()}, source, paths


def _check_lengths(model, sentences: dict[str, list[str]], paths: dict[str, Path]) -> None:
    """Every sentence fits the model's context: refused before any forward pass, by file:line."""
    for lang, lines in sentences.items():
        if lang in paths:
            where = f"parallel file {paths[lang]}:{{}}"
        else:
            where = f"bundled parallel sentence {{}} ({lang})"
        model.check_context(
            [len(ids) for ids in model.tokenize(lines)],
            lambda i, where=where: where.format(i + 1),
            remedy="shorten that sentence, or drop its line from every file",
        )


def _summary(curve: torch.Tensor, layers: list[int]) -> dict:
    i = int(curve.argmax())
    return {
        "peak_layer": layers[i],
        "peak": float(curve[i]),
        "first": float(curve[0]),
        "last": float(curve[-1]),
    }


def workload(config: AlignmentConfig, model: LoadedModel) -> Workload:
    """One extraction of every sentence at every layer per pooling (plus mean pooling's one
    prompt for the shared first residual)."""
    sentences, _, _ = _sentences(config)
    prompts = [s for lang in config.langs for s in sentences[lang]]
    passes = []
    for pooling in config.poolings:
        options = dict(batch_size=config.batch_size, stored=model.n_layers)
        passes.append(forward_pass(model, f"{pooling} features", prompts, **options))
        if sim.drops_first_token(model, prompts, pooling):
            passes.append(forward_pass(model, "shared first residual", prompts[:1], **options))
    # The metrics read a chunk of layers at a time (``sim.alignment_metrics``), so what stays in
    # memory is one extraction's rows, gathered on the host before they are written.
    return Workload(tuple(passes), held=len(prompts) * model.n_layers)


@register(
    NAME,
    AlignmentConfig,
    "cross-lingual similarity of parallel sentences per layer",
    workload=workload,
)
def run(config: AlignmentConfig) -> Path:
    """Run the experiment; returns the result directory."""
    seed_everything(config.seed)
    sentences, source, paths = _sentences(config)
    model = config.load_model()
    _check_lengths(model, sentences, paths)
    store = ActivationStore(config.store)
    out = ResultDir(NAME, config)
    langs, layers = config.langs, list(range(model.n_layers))
    groups = pairs.pair_groups(langs)
    rows, peak_rows, group_rows, corr_rows, variants = [], [], [], [], {}
    heat_done = False
    for pooling in config.poolings:
        feats = sim.parallel_activations(
            model, sentences, pooling=pooling, batch_size=config.batch_size, store=store
        )
        # Read from the store a chunk of layers at a time; CKA and SVCCA centre each language's
        # features themselves, so centring recomputes only the cosine metrics.
        by_centring = sim.alignment_metrics(
            feats,
            k=config.k,
            variance=config.variance,
            max_components=config.svcca_max_components,
            device=model.device,
        )
        for centring, values in by_centring.items():
            values = {m: v.cpu() for m, v in values.items()}
            variant = f"{pooling}/{centring}"
            summary: dict = {}
            for metric, v in values.items():
                for li, layer in enumerate(layers):
                    for a, la in enumerate(langs):
                        for b, lb in enumerate(langs):
                            if a != b:
                                rows.append(
                                    dict(pooling=pooling, centring=centring, metric=metric)
                                    | dict(layer=layer, src=la, tgt=lb, value=float(v[li, a, b]))
                                )
                peak_layer, peak_value = pairs.peak_layers(v, layers)
                for a, la in enumerate(langs):
                    for b, lb in enumerate(langs):
                        if a != b:
                            peak_rows.append(
                                dict(pooling=pooling, centring=centring, metric=metric)
                                | dict(src=la, tgt=lb, peak_layer=int(peak_layer[a, b]))
                                | dict(peak=float(peak_value[a, b]), first=float(v[0, a, b]))
                                | dict(last=float(v[-1, a, b]))
                            )
                curves = pairs.group_curves(v, groups)
                summary[metric] = {g: _summary(c[0], layers) for g, c in curves.items()}
                for g, (mean, lo, hi) in curves.items():
                    for li, layer in enumerate(layers):
                        group_rows.append(
                            dict(pooling=pooling, centring=centring, metric=metric, group=g)
                            | dict(layer=layer, mean=float(mean[li]))
                            | dict(q25=float(lo[li]), q75=float(hi[li]))
                        )
                corr = pairs.relatedness_correlation(v, groups)
                all_pairs = v[:, groups.off_diagonal].mean(1)
                peak_i = int(all_pairs.argmax())
                summary[metric]["relatedness_at_peak"] = {
                    r: float(c[peak_i]) for r, c in corr.items()
                }
                for li, layer in enumerate(layers):
                    corr_rows.append(
                        dict(pooling=pooling, centring=centring, metric=metric, layer=layer)
                        | {r: float(c[li]) for r, c in corr.items()}
                    )
            variants[variant] = summary
            _curve_figures(out, variant, values, groups, layers)
            if not heat_done and centring == "centred":
                _heatmaps(out, variant, values["p1_margin"], langs, layers, groups)
                heat_done = True
    out.table("per_layer_pair", rows)
    out.table("peaks", peak_rows)
    out.table("groups", group_rows)
    out.table("relatedness", corr_rows)
    headline = f"{config.poolings[0]}/centred"
    top = variants[headline]
    metrics = {
        "model": config.model,
        "source": source,
        "files": {lang: str(path) for lang, path in paths.items()},
        "n_sentences": len(next(iter(sentences.values()))),
        "n_langs": len(langs),
        "n_layers": len(layers),
        "headline_variant": headline,
        **{
            f"{metric}_peak_layer_{group.replace(' ', '_')}": top[metric][group]["peak_layer"]
            for metric in ("p1_margin", "cka")
            for group in ("same script", "different script", "same family", "different family")
            if group in top[metric]
        },
        "variants": variants,
    }
    out.metrics(metrics)
    out.report("Mid-layer alignment across languages", __doc__.split("\n\n")[1], metrics)
    return out.commit()


def _curve_figures(out, variant, values, groups, layers) -> None:
    slug = variant.replace("/", "_")
    for metric in ("p1_margin", "cka"):
        series = {
            f"{g} ({variant})": tuple(t.tolist() for t in c)
            for g, c in pairs.group_curves(values[metric], groups).items()
        }
        out.figure(
            f"{metric}_by_layer_{slug}",
            f"{LABELS[metric]} by layer ({variant} pooling)",
            "Mean over ordered language pairs of each group, band: interquartile range over "
            "pairs. A peak in the middle layers is the 'shared concept space' of the "
            "middle-layer alignment papers.",
            *plots.lines_with_bands(
                layers, series, title=LABELS[metric], xlabel="layer", ylabel=LABELS[metric]
            ),
        )
    series = {}
    for metric, v in values.items():
        mean = v[:, groups.off_diagonal].mean(1)
        series[LABELS[metric]] = (mean.tolist(), mean.tolist(), mean.tolist())
    out.figure(
        f"all_metrics_by_layer_{slug}",
        f"Every metric by layer ({variant} pooling)",
        "Mean over all ordered pairs of different languages: do the similarity indices agree "
        "on where languages meet?",
        *plots.lines_with_bands(
            layers, series, title=f"All metrics ({variant})", xlabel="layer", ylabel="value"
        ),
    )


def _heatmaps(out, variant, values, langs, layers, groups) -> None:
    peak = int(values[:, groups.off_diagonal].mean(1).argmax())
    static, _ = plots.heatmap(
        values[peak].numpy(),
        langs,
        langs,
        title=f"Retrieval P@1 (margin) at layer {layers[peak]} ({variant})",
        xlabel="candidates",
        ylabel="queries",
        zlabel="P@1",
        vmin=0,
        vmax=1,
    )
    small_multiples, interactive = plots.heatmaps_by_layer(
        values.numpy(),
        langs,
        langs,
        layers,
        title=f"Retrieval P@1 (margin), {variant}",
        xlabel="candidates",
        ylabel="queries",
        zlabel="P@1",
        vmin=0,
        vmax=1,
        active=peak,
    )
    plt.close(small_multiples)  # the static figure is the peak layer's alone
    out.figure(
        "retrieval_heatmap",
        "Translation retrieval per language pair",
        f"P@1 by ratio margin, queries in the row language, candidates in the column language, "
        f"at the layer where the mean over pairs peaks (layer {layers[peak]}); the interactive "
        "version has a layer slider.",
        static,
        interactive,
    )
