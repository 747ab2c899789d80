"""knowledge-boundary: where does a model encode whether it knows the answer, in every language?

After "Analyzing LLMs' Knowledge Boundary Cognition Across Languages Through the Lens of Internal
Representations": linear probes per layer and language on known vs unknown questions (5-fold
CV), cross-lingual transfer (train on one language, test on another), training-free alignments
that close the transfer gap, and the linear structure of language differences.

Labels are the model's own answers by default (an answerable question is known only if the model
completes its fact's cloze); construction labels (answerable = known) are a config, but they
separate by question form (invented names, future years) before any knowledge. Folds are balanced
per relation, and a control task in the sense of Hewitt & Liang (2019), the same probe on labels
shuffled within relation, gives the selectivity (accuracy - control accuracy) per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch

from experiments import register
from experiments.base import ExperimentConfig, ResultDir, seed_everything
from experiments.fields import Range, above, at_least
from interp import plots
from interp.analysis.geometry import centroid_pca, language_centroids, language_offset_r2
from interp.data.loader import dataset_sha256
from interp.errors import PolylensError
from interp.model.footprint import Workload, forward_pass
from interp.model.models import LoadedModel
from interp.storage.store import ActivationStore
from probes.align import aligned_transfer, transfer_matrix
from probes.artifact import save_probe
from probes.boundary import balanced_items, boundary_features, language_records
from probes.controls import selectivity_peak
from probes.curves import curve_peaks, known_rates, probe_curves
from probes.evaluate import balanced_accuracy
from probes.features import question_spans
from probes.labels import LABEL_BATCH_SIZE, LABEL_NEW_TOKENS, label_prompts
from probes.linear import fit_logistic

NAME = "knowledge-boundary"


@dataclass
class BoundaryConfig(ExperimentConfig):
    """Probe settings on top of the shared experiment fields."""

    n_per_class: int = 100
    """Known and unknown questions per language (the same items in every language)."""
    labels: Literal["construction", "model"] = "model"
    """model (the model's own answer decides) or construction (answerable = known; separable by
    question form alone)."""
    position: Literal["last", "mean"] | None = None
    """last (the question's last token) or mean (over its tokens); null: last, and mean for an
    encoder."""
    chat: bool = False
    """Wrap questions in the model's chat template."""
    folds: int = 5
    """Cross-validation folds."""
    C: float = 1.0  # noqa: N815 (scikit-learn's name)
    """Inverse L2 strength of the logistic probe."""
    control_task: bool = True
    """Also fit the probe on labels shuffled within relation (Hewitt & Liang's control task)
    and report selectivity = accuracy - control accuracy per layer."""
    control_shuffles: int = 5
    """Shufflings the control task's metrics are averaged over."""

    _ranges: ClassVar[dict[str, Range]] = {
        "n_per_class": at_least(1),
        "folds": at_least(2),
        "C": above(0),
        "control_shuffles": at_least(1),
    }

    def check_model(self, model: LoadedModel) -> None:
        """Model labels are the model's own answers: an encoder, which generates none, refuses."""
        if self.labels == "model":
            model.require_next_token(
                "knowledge-boundary's labels: model (its own answers)",
                remedy="set labels: construction",
            )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_per_class < self.folds:
            raise PolylensError("n_per_class must be at least the number of folds")


def workload(config: BoundaryConfig, model: LoadedModel) -> Workload:
    """Per language, every layer at the questions' positions (store-cached); with ``model``
    labels, the model's greedy answers to the answerable questions' clozes.

    Upper bound with ``model`` labels: an answer stops at its first newline, and is counted at
    ``LABEL_NEW_TOKENS``. Exact otherwise (for a cold store).
    """
    position = config.position or model.default_positions
    ids = balanced_items(config.n_per_class, config.seed)
    passes, held, loaded = [], 0, 0
    for lang in config.langs:
        records = language_records(lang, ids)
        prompts, spans = question_spans(model, [r.question for r in records], chat=config.chat)
        rows = [1 if position == "last" else b - a for a, b in spans]
        passes.append(
            forward_pass(
                model, "question residuals", prompts, batch_size=config.batch_size,
                stored=tuple(r * model.n_layers for r in rows),
            )
        )  # fmt: skip
        held += len(prompts) * model.n_layers
        loaded = max(loaded, sum(rows) * model.n_layers)  # one language's rows, read back
        if config.labels == "model":
            passes.append(
                forward_pass(
                    model, "labels (the model's answers)", label_prompts(records)[2],
                    batch_size=LABEL_BATCH_SIZE, logits="last", new_tokens=LABEL_NEW_TOKENS,
                )
            )  # fmt: skip
    return Workload(tuple(passes), held=held + loaded)


@register(
    NAME,
    BoundaryConfig,
    "per-layer known/unknown probes, transfer and alignment",
    workload=workload,
)
def run(config: BoundaryConfig) -> Path:
    """Run the experiment; returns the result directory."""
    seed_everything(config.seed)
    model = config.load_model()
    position = config.position or model.default_positions
    store = ActivationStore(config.store)
    ids = balanced_items(config.n_per_class, config.seed)
    boundary = boundary_features(
        model,
        config.langs,
        ids,
        labels=config.labels,
        position=position,
        chat=config.chat,
        batch_size=config.batch_size,
        store=store,
    )
    data, train_mask = boundary.features, boundary.train
    out = ResultDir(NAME, config)
    layers = list(range(model.n_layers))

    probe_args = dict(
        labels=config.labels,
        folds=config.folds,
        seed=config.seed,
        C=config.C,
        with_control=config.control_task,
        control_shuffles=config.control_shuffles,
    )
    everything = probe_curves(data, boundary.groups, items="all", **probe_args)
    out.notes += everything.skipped
    rows, curves, sel = everything.rows, everything.curves, everything.control
    if not curves:
        raise PolylensError("no language has both known and unknown items; change the labels")
    _curve_figure(out, "auroc_by_layer", curves, "all questions")
    sel_rows = _selectivity_rows(sel, "all")
    selectivity_all = _selectivity_figure(out, "selectivity_by_layer", sel, "all questions")
    peaks = curve_peaks(curves, model.n_blocks)
    mean_curve = torch.stack([c[0] for c in curves.values()]).mean(0)
    best = int(mean_curve.argmax())
    answerable_only = None
    if config.labels == "model":
        # Unanswerable questions differ from answerable ones in form (invented names, future
        # years), which a probe can read without any knowledge. Among answerable questions only
        # the model's own correctness separates the classes.
        # Relations differ in how often the model knows them (capitals more than currencies), so
        # the folds are balanced per relation and the control task shuffles within relation.
        mask = boundary.answerable
        subset = {lang: (x[:, mask], y[mask]) for lang, (x, y) in data.items()}
        relations = [g for g, m in zip(boundary.groups, mask.tolist()) if m]
        answerable = probe_curves(subset, relations, items="answerable", **probe_args)
        out.notes += answerable.skipped
        more_rows, subset_curves, subset_sel = (
            answerable.rows,
            answerable.curves,
            answerable.control,
        )
        rows += more_rows
        sel_rows += _selectivity_rows(subset_sel, "answerable")
        answerable_only = {
            "known_per_language": {lang: int(y.sum()) for lang, (_, y) in subset.items()},
            "answerable_per_language": int(mask.sum()),
            "known_rate_per_relation": known_rates(subset, relations),
            "peaks": curve_peaks(subset_curves, model.n_blocks),
            "selectivity": _selectivity_figure(
                out, "selectivity_by_layer_answerable", subset_sel, "answerable questions"
            ),
        }
        if subset_curves:
            _curve_figure(out, "auroc_by_layer_answerable", subset_curves, "answerable questions")
    out.table("probe_by_layer", rows)
    if sel_rows:
        out.table("selectivity_by_layer", sel_rows)

    langs = list(curves)
    train = {lang: (data[lang][0][:, train_mask], data[lang][1][train_mask]) for lang in langs}
    test = {lang: (data[lang][0][:, ~train_mask], data[lang][1][~train_mask]) for lang in langs}
    _, matrix = transfer_matrix(
        train, lambda a, b: fit_logistic(a, b, C=config.C), balanced_accuracy, test=test
    )
    out.table(
        "transfer_best_layer",
        [
            {"train": a, "test": b, "balanced_accuracy": float(matrix[best, i, j])}
            for i, a in enumerate(langs)
            for j, b in enumerate(langs)
        ],
    )
    out.figure(
        "transfer_best_layer",
        f"Cross-lingual transfer at layer {best}",
        "Balanced test accuracy (mean recall of known and unknown; chance 0.5) of a probe "
        "trained on one language (rows) applied to another "
        "(columns), at the layer with the best mean in-language AUROC.",
        *plots.heatmap(
            matrix[best].numpy(),
            langs,
            langs,
            title="transfer (balanced accuracy)",
            xlabel="test language",
            ylabel="train language",
            zlabel="balanced accuracy",
            vmin=0.4,
            vmax=1,
        ),
    )
    out.table(
        "transfer_matrix_by_layer",
        [
            {"layer": li, "train": a, "test": b, "balanced_accuracy": float(matrix[li, i, j])}
            for li in layers
            for i, a in enumerate(langs)
            for j, b in enumerate(langs)
        ],
    )
    out.figure(
        "transfer_heatmaps",
        "Cross-lingual transfer at every layer",
        "The same matrix as above for each layer (the interactive figure has a layer slider).",
        *plots.heatmaps_by_layer(
            matrix.numpy(),
            langs,
            langs,
            layers,
            title="transfer (balanced accuracy) by layer",
            xlabel="test language",
            ylabel="train language",
            zlabel="balanced accuracy",
            vmin=0.4,
            vmax=1,
        ),
    )
    off = ~torch.eye(len(langs), dtype=torch.bool)
    own, other = matrix.diagonal(dim1=1, dim2=2), matrix[:, off]  # [layer, langs], [layer, pairs]
    diag, cross = own.mean(-1), other.mean(-1)
    bands = {
        name: tuple(t.tolist() for t in (v.mean(-1), v.quantile(0.25, -1), v.quantile(0.75, -1)))
        for name, v in (("in-language", own), ("cross-language", other))
    }
    fig = plots.lines_with_bands(
        layers,
        bands,
        title="Probe accuracy by layer: in-language vs transfer",
        xlabel="layer",
        ylabel="balanced test accuracy",
    )
    out.figure(
        "transfer_by_layer",
        "Transfer across layers",
        "Mean balanced test accuracy of probes on their own language (diagonal) and on the other "
        "languages (off-diagonal), per layer; bands span the middle half of the languages "
        "(pairs).",
        *fig,
    )

    # Alignments at the best probe layer and at the best transfer layer.
    aligned_layers = sorted({best, int(cross.argmax())})
    aligned = aligned_transfer(train, test, aligned_layers, config.C)
    alignment_rows, alignment = [], {}
    for i, layer in enumerate(aligned_layers):
        base = float(aligned["identical"][i])
        alignment[layer] = {
            m: {
                "balanced_accuracy": float(v[i]),
                "gap_closed": (float(v[i]) - base) / max(1e-9, float(diag[layer]) - base),
            }
            for m, v in aligned.items()
        }
        alignment_rows += [{"layer": layer, "method": m} | v for m, v in alignment[layer].items()]
    out.table("alignment", alignment_rows)
    for lang in langs:  # the in-language probe at the best layer, as a reusable artifact
        save_probe(
            fit_logistic(data[lang][0][best : best + 1], data[lang][1], C=config.C),
            out.path / "probes" / f"{lang}-layer{best}",
            {
                "model": model.identity,
                "layers": [best],
                "languages": [lang],
                "labels": config.labels,
                "position": position,
                "C": config.C,
                "dataset": "boundary",
                "dataset_sha256": dataset_sha256("boundary"),
                "items": ids,
                "cv_auroc": float(curves[lang][0][best]),  # (mean, std) over folds
            },
        )

    centroids = language_centroids({lang: data[lang][0] for lang in langs})  # [layer, lang, d]
    coords = centroid_pca(centroids[best], k=2).numpy()
    out.figure(
        "centroids",
        "Language centroids",
        "Mean question representation per language at the best layer, projected on the "
        "first two principal components of the centroids.",
        *plots.labelled_scatter(
            coords,
            langs,
            title=f"Language centroids, layer {best} (PCA)",
            xlabel="PC1",
            ylabel="PC2",
        ),
    )

    offsets = []
    if "en" in langs:
        x_en = data["en"][0]
        for lang in langs:
            if lang == "en":
                continue
            explained = language_offset_r2(data[lang][0], x_en)  # parallel items: same rows
            offsets += [
                {"lang": lang, "layer": li, "offset_r2": float(explained[li])} for li in layers
            ]
        out.table("language_offset", offsets)

    metrics = {
        "model": config.model,
        "labels": config.labels,
        "position": position,
        "n_items_per_language": len(ids),
        "best_layer": best,
        "best_layer_relative_depth": best / model.n_blocks,
        "mean_auroc_best_layer": float(mean_curve[best]),
        "peaks": peaks,
        "answerable_only": answerable_only,
        "in_language_balanced_accuracy_best_layer": float(diag[best]),
        "cross_language_balanced_accuracy_best_layer": float(cross[best]),
        "best_transfer_layer": int(cross.argmax()),
        "cross_language_balanced_accuracy_best_transfer_layer": float(cross.max()),
        "alignment_best_layer": alignment[best],
        "alignment_best_transfer_layer": alignment[int(cross.argmax())],
    }
    if offsets:
        at_best = [o["offset_r2"] for o in offsets if o["layer"] == best]
        metrics["offset_r2_best_layer_mean"] = float(np.mean(at_best))
    metrics["selectivity"] = selectivity_all
    # Layer 1: one block on the tokens (at layer 0 the last token, "?", is the same everywhere).
    layer1 = float(torch.stack([c[0][min(1, len(c[0]) - 1)] for c in curves.values()]).mean())
    metrics["controls"] = _controls(out, config, layer1, selectivity_all, answerable_only)
    out.metrics(metrics)
    out.report("Knowledge boundary across languages", __doc__.split("\n\n")[1], metrics)
    return out.commit()


def _curve_figure(out: ResultDir, name: str, curves: dict, items: str) -> None:
    layers = list(range(len(next(iter(curves.values()))[0])))
    bands = {
        lang: (mean.tolist(), (mean - std).tolist(), (mean + std).tolist())
        for lang, (mean, std) in curves.items()
    }
    out.figure(
        name,
        f"Where is 'do I know this?' linearly readable? ({items})",
        "Cross-validated AUROC of a logistic probe per layer and language, mean +- one standard "
        "deviation over the folds.",
        *plots.lines_with_bands(
            layers,
            bands,
            title=f"Known vs unknown, {items}: probe AUROC by layer",
            xlabel="layer",
            ylabel="AUROC (logistic probe, CV)",
        ),
    )


def _selectivity_rows(control: dict[str, dict], items: str) -> list[dict]:
    return [
        {"items": items, "lang": lang, "layer": li} | {k: float(v[li]) for k, v in per.items()}
        for lang, per in control.items()
        for li in range(len(per["selectivity"]))
    ]


def _selectivity_figure(out: ResultDir, name: str, control: dict, items: str) -> dict | None:
    """Selectivity by layer (mean over languages, band: min to max); returns its peak."""
    if not control:
        return None
    sel = torch.stack([per["selectivity"] for per in control.values()])  # [lang, layer]
    acc = torch.stack([per["accuracy"] for per in control.values()])
    ctrl = torch.stack([per["control_accuracy"] for per in control.values()])
    layers = list(range(sel.shape[1]))
    bands = {
        label: (v.mean(0).tolist(), v.min(0).values.tolist(), v.max(0).values.tolist())
        for label, v in (("selectivity", sel), ("probe accuracy", acc), ("control accuracy", ctrl))
    }
    out.figure(
        name,
        f"Control task: selectivity by layer ({items})",
        "Hewitt & Liang's control task: the same logistic probe fitted on labels shuffled within "
        "relation (each relation keeps its known/unknown counts). Selectivity is the probe's "
        "cross-validated accuracy minus the control's; what the relation alone (or the question "
        "form) gives, the control gets too. Lines: mean over languages; bands: min to max.",
        *plots.lines_with_bands(
            layers,
            bands,
            title=f"Selectivity (accuracy - control accuracy), {items}",
            xlabel="layer",
            ylabel="accuracy (CV)",
        ),
    )
    auroc = torch.stack([per["auroc"] for per in control.values()])
    control_auroc = torch.stack([per["control_auroc"] for per in control.values()])
    # Accuracy is Hewitt & Liang's measure; with unbalanced known/unknown it sits near the
    # majority rate, so the same difference in AUROC is reported beside it.
    return selectivity_peak(acc, ctrl) | {
        "auroc": selectivity_peak(auroc, control_auroc),
        "per_language_peak": {
            lang: selectivity_peak(per["accuracy"][None], per["control_accuracy"][None])
            for lang, per in control.items()
        },
    }


def _controls(
    out: ResultDir, config: BoundaryConfig, layer1: float, sel_all: dict | None, sub: dict | None
) -> list[dict]:
    """The report's controls: question form, relation base rates, the label scheme."""
    form = f"all questions, layer 1 (one block on the tokens): mean AUROC {layer1:.3f}"
    if sub is not None and sub["peaks"]:
        best = max(sub["peaks"].values(), key=lambda p: p["peak_auroc"])
        mean_peak = float(np.mean([p["peak_auroc"] for p in sub["peaks"].values()]))
        form += (
            f"; answerable only (one form): mean of per-language peak AUROCs {mean_peak:.3f} "
            f"(best {best['peak_auroc']:.3f} at layer {best['peak_layer']})"
        )
    rows = [
        out.control(
            "Question form: unanswerable questions use invented names and future years, so a "
            "probe can separate them by surface form.",
            "AUROC after a single block, and probes among answerable questions only, where the "
            "form is shared and only the model's answer decides the label "
            f"(labels: {config.labels}).",
            form,
        )
    ]
    if sel_all is not None:
        rows.append(
            out.control(
                "Relation and construction: the labels go with what a question asks about.",
                "Control task on all questions: labels shuffled within relation / construction "
                "type; selectivity = accuracy - control accuracy.",
                f"peak selectivity {sel_all['peak_selectivity']:.3f} at layer "
                f"{sel_all['peak_layer']} (accuracy {sel_all['accuracy_at_peak']:.3f} vs "
                f"control {sel_all['control_accuracy_at_peak']:.3f})",
            )
        )
    if sub is not None and sub.get("selectivity") is not None:
        s = sub["selectivity"]
        rates = ", ".join(f"{r} {v:.2f}" for r, v in sub["known_rate_per_relation"].items())
        rows.append(
            out.control(
                f"Among answerable questions, relations are known at different rates ({rates}): "
                "a probe could read the relation, not the knowledge.",
                "Relation-balanced folds and the control task within relation (answerable only).",
                f"peak selectivity {s['peak_selectivity']:.3f} at layer {s['peak_layer']} "
                f"(accuracy {s['accuracy_at_peak']:.3f} vs control "
                f"{s['control_accuracy_at_peak']:.3f})",
            )
        )
    elif config.labels == "construction":
        rows.append(
            out.control(
                "Construction labels: known = answerable, which the question form gives away.",
                "Model labels (the default) add answerable-only probes and their control task.",
                "not run under construction labels",
            )
        )
    return rows
