"""language-neurons: which MLP neurons are specific to one language, and do they matter for it?

After "Language-Specific Neurons" (LAPE, Tang et al. 2024) and "Neuron Specialization": the
activation probability of every ``mlp_act`` neuron per language on the training split of the
bundled parallel text, LAPE, the paper's selection rule, counts per layer and language and the
overlap between languages; then the causal check: zero one language's neurons and measure
next-token loss on held-out parallel text in every language (the diagonal should rise most).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from experiments import register
from experiments.base import ExperimentConfig, ResultDir, seed_everything
from experiments.fields import Range, at_least
from interp import plots
from interp.analysis import neurons as nrn
from interp.data import load
from interp.data.loader import dataset_sha256
from interp.model.footprint import Workload, forward_pass, held_vectors
from interp.model.models import LoadedModel
from interp.model.sites import parse_sites, site_width

NAME = "language-neurons"
_RATE = Range(0, 1, lo_open=True, hi_open=True)
_ENCODER_NO_ABLATION = (
    "The causal check (next-token loss with a language's neurons zeroed) is skipped: an encoder "
    "predicts no next token."
)


@dataclass
class NeuronConfig(ExperimentConfig):
    """LAPE settings on top of the shared experiment fields."""

    n_train_sentences: int | None = None
    """Training-split sentences per language for the activation probabilities (default: all)."""
    n_eval_sentences: int = 8
    """Held-out (test-split) sentences per language scored in the causal check."""
    top_rate: float = 0.01
    """Share of all neurons selected, lowest LAPE first (the paper: 1%)."""
    filter_rate: float = 0.95
    """Candidates exceed this quantile of all activation probabilities in some language."""
    bar_rate: float = 0.95
    """A selected neuron belongs to the languages where it exceeds this quantile."""
    eval_batch_size: int = 8
    """Texts per forward pass of the causal check (full vocabulary logits)."""

    _ranges: ClassVar[dict[str, Range]] = {
        "n_train_sentences": at_least(1),
        "n_eval_sentences": at_least(1),
        "top_rate": _RATE,
        "filter_rate": _RATE,
        "bar_rate": _RATE,
        "eval_batch_size": at_least(1),
    }


def _texts(langs: list[str], split: str, n: int | None) -> dict[str, list[str]]:
    records = load("parallel", langs, split=split)
    return {lang: [r.text for r in records if r.lang == lang][:n] for lang in langs}


def workload(config: NeuronConfig, model: LoadedModel) -> Workload:
    """The body over each language's training sentences, every block's MLP activations read
    (nothing stored); for a causal LM, the next-token loss of the held-out sentences, plain
    and with each language's neurons zeroed (logits at every position). Exact."""
    langs = config.langs
    train = _texts(langs, "train", config.n_train_sentences)
    passes = [
        forward_pass(model, "activation probability", lines, batch_size=config.batch_size)
        for lines in train.values()
    ]
    if model.causal:
        passes += [
            forward_pass(
                model, "next-token loss (plain, each language ablated)", lines,
                batch_size=config.eval_batch_size, logits="all", repeats=len(langs) + 1,
            )
            for lines in _texts(langs, "test", config.n_eval_sentences).values()
        ]  # fmt: skip
    # One batch's mlp_act values at every block, recorded and stacked (two copies).
    cells = max(
        (len(p.lengths[i : i + p.batch_size]) * max(p.lengths[i : i + p.batch_size])
         for p in passes[: len(train)] for i in range(0, len(p.lengths), p.batch_size)),
        default=0,
    )  # fmt: skip
    width = site_width(model, parse_sites(model, "mlp_act.0")[0])
    value = next(model.hf.parameters()).element_size()
    return Workload(
        tuple(passes),
        held=held_vectors(2 * model.n_blocks * cells * width * value, model.d_model),
    )


@register(
    NAME,
    NeuronConfig,
    "language-specific MLP neurons (LAPE) and their ablation",
    workload=workload,
)
def run(config: NeuronConfig) -> Path:
    """Run the experiment; returns the result directory."""
    seed_everything(config.seed)
    langs = config.langs
    train = _texts(langs, "train", config.n_train_sentences)
    held_out = _texts(langs, "test", config.n_eval_sentences)
    model = config.load_model()
    out = ResultDir(NAME, config)
    probs, tokens = nrn.activation_probability(model, train, batch_size=config.batch_size)
    mask = nrn.select_language_neurons(
        probs, top_rate=config.top_rate, filter_rate=config.filter_rate, bar_rate=config.bar_rate
    )
    entropy = nrn.lape(probs)
    layers = list(range(model.n_blocks))
    per_layer = mask.sum(-1)  # [lang, layer]
    out.table(
        "neurons_per_layer",
        [
            {"layer": layer, **{lang: int(per_layer[i, layer]) for i, lang in enumerate(langs)}}
            for layer in layers
        ],
    )
    selected = mask.any(0).nonzero().tolist()
    out.table(
        "selected_neurons",
        [
            {
                "block": b,
                "unit": u,
                "lape": float(entropy[b, u]),
                "languages": " ".join(lang for i, lang in enumerate(langs) if mask[i, b, u]),
                **{f"p_{lang}": float(probs[b, u, i]) for i, lang in enumerate(langs)},
            }
            for b, u in selected
        ],
    )
    out.figure(
        "neurons_by_layer",
        "Language-specific neurons per block and language",
        "Neurons selected by LAPE (low entropy of the per-language activation probabilities, "
        "among frequently active neurons), assigned to the languages where they fire often.",
        *plots.heatmap(
            per_layer.T.numpy(),
            [str(layer) for layer in layers],
            langs,
            title="Language-specific neurons",
            xlabel="language",
            ylabel="block",
            zlabel="neurons",
            fmt=".0f",
        ),
    )
    shared = nrn.overlap(mask)
    out.table(
        "overlap",
        [
            {"lang": a, **{b: int(shared[i, j]) for j, b in enumerate(langs)}}
            for i, a in enumerate(langs)
        ],
    )
    out.figure(
        "overlap",
        "Neurons shared between languages",
        "Selected neurons specific to both languages (diagonal: each language's count).",
        *plots.heatmap(
            shared.numpy(),
            langs,
            langs,
            title="Shared language-specific neurons",
            xlabel="language",
            ylabel="language",
            zlabel="neurons",
            fmt=".0f",
        ),
    )

    if model.causal:
        ablation = _ablation(out, model, mask, langs, held_out, config)
    else:
        ablation = {"ablation": None}
        out.notes.append(_ENCODER_NO_ABLATION)
    metrics = {
        "model": config.model,
        "data": f"parallel (sha256 {dataset_sha256('parallel')[:12]})",
        "train_sentences": {lang: len(v) for lang, v in train.items()},
        "train_tokens": tokens,
        "eval_sentences": {lang: len(v) for lang, v in held_out.items()},
        "n_neurons": int(probs.shape[0] * probs.shape[1]),
        "n_selected": len(selected),
        "neurons_per_language": {lang: int(mask[i].sum()) for i, lang in enumerate(langs)},
        "neurons_per_block": [int(mask.any(0)[b].sum()) for b in layers],
        **ablation,
    }
    out.metrics(metrics)
    out.report("Language-specific neurons", __doc__.split("\n\n")[1], metrics)
    return out.commit()


def _ablation(out: ResultDir, model, mask, langs, held_out, config: NeuronConfig) -> dict:
    """The causal check: next-token loss with each language's neurons zeroed; its metrics."""
    baseline, loss = nrn.ablation_matrix(
        model, mask, langs, held_out, batch_size=config.eval_batch_size
    )
    delta = loss - baseline[None, :]
    out.table(
        "ablation",
        [
            {
                "ablated": a,
                "text": b,
                "baseline_loss": float(baseline[j]),
                "loss": float(loss[i, j]),
                "increase": float(delta[i, j]),
            }
            for i, a in enumerate(langs)
            for j, b in enumerate(langs)
        ],
    )
    out.figure(
        "ablation_matrix",
        "Next-token loss increase when one language's neurons are zeroed",
        "Row: the language whose specific neurons are set to zero; column: the held-out text "
        "scored. Loss in nats per token, minus the unedited model's loss on the same text. A "
        "dominant diagonal means the neurons matter for their own language.",
        *plots.heatmap(
            delta.numpy(),
            langs,
            langs,
            title="Loss increase (nats/token)",
            xlabel="text language",
            ylabel="ablated language",
            zlabel="loss increase",
        ),
    )
    eye = torch.eye(len(langs), dtype=torch.bool)
    has = mask.flatten(1).any(1)
    rows_with = has[:, None].expand_as(eye)
    own_most = [
        lang
        for i, lang in enumerate(langs)
        if has[i] and int(delta[i].argmax()) == i  # the own text is hurt most
    ]
    return {
        "ablation_diagonal_increase": float(delta[eye & rows_with].mean()) if has.any() else None,
        "ablation_off_diagonal_increase": float(delta[~eye & rows_with].mean())
        if has.any()
        else None,
        "own_language_hurt_most": own_most,
        "baseline_loss": {lang: float(baseline[i]) for i, lang in enumerate(langs)},
        "loss_increase_diagonal": {lang: float(delta[i, i]) for i, lang in enumerate(langs)},
    }
