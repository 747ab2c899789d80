"""Language-specific neurons: LAPE (Tang et al. 2024) and the causal check by deactivation.

A neuron is one unit of an MLP's hidden activation, the ``mlp_act.{block}`` site (for gated
MLPs, the gated product the down projection reads). For every neuron and language:

- activation probability: the share of the language's tokens on which the neuron is positive
  (pad and special tokens such as BOS left out);
- LAPE: the entropy of those probabilities normalised over languages. Low entropy means the
  neuron fires for few languages;
- selection (the rule of the paper's code): among neurons whose probability exceeds the
  ``filter_rate`` quantile of all probabilities in at least one language, the ``top_rate``
  share with the lowest LAPE; each is assigned to every language where its probability
  exceeds the ``bar_rate`` quantile;
- causal check: set one language's neurons to zero (an ``Apply`` edit at ``mlp_act``) and
  measure next-token loss on held-out text of every language; the language's own text should
  be hurt most.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.errors import PolylensError
from interp.interventions import Apply, Edit, intervene
from interp.model.models import LoadedModel
from interp.model.sites import parse_sites, recording, site_width

__all__ = [
    "ablation_matrix",
    "activation_probability",
    "deactivation_edits",
    "lape",
    "overlap",
    "select_language_neurons",
    "token_loss",
    "valid_tokens",
]

Probs = Float[Tensor, "layer neuron lang"]
NeuronMask = Bool[Tensor, "lang layer neuron"]


def valid_tokens(model: LoadedModel, batch: dict[str, Tensor]) -> Bool[Tensor, "batch seq"]:
    """Real tokens of a left-padded batch, special tokens (BOS, pad) left out."""
    special = torch.tensor(model.tokenizer.all_special_ids, device=batch["input_ids"].device)
    return batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], special)


@torch.inference_mode()
def activation_probability(
    model: LoadedModel,
    texts: Mapping[str, Sequence[str]],
    *,
    batch_size: int = 16,
) -> tuple[Probs, dict[str, int]]:
    """Share of each language's tokens on which each ``mlp_act`` neuron is positive.

    Args:
        model: the model.
        texts: ``{lang: texts}``.
        batch_size: texts per forward pass (the body only: no unembedding).

    Returns:
        ``(probs [layer, neuron, lang], tokens per language)``, languages in ``texts`` order.
    """
    sites = [f"mlp_act.{i}" for i in range(model.n_blocks)]
    width = site_width(model, parse_sites(model, sites[0])[0])
    over = torch.zeros(len(texts), model.n_blocks, width, device=model.device)
    counts = {}
    with recording(model, sites) as records:
        for li, (lang, lines) in enumerate(texts.items()):
            n = 0
            for _, batch in model.padded_batches(list(lines), batch_size=batch_size):
                model.body(**batch, use_cache=False)
                acts = torch.stack([records[s].pop() for s in sites])  # [layer, b, seq, width]
                valid = valid_tokens(model, batch)
                over[li] += ((acts > 0) & valid[None, ..., None]).sum((1, 2)).float()
                n += int(valid.sum())
            if n == 0:
                raise PolylensError(f"language {lang!r} has no tokens to count")
            over[li] /= n
            counts[lang] = n
    return over.permute(1, 2, 0).cpu(), counts


def lape(probs: Probs) -> Float[Tensor, "layer neuron"]:
    """LAPE: the entropy of a neuron's activation probabilities normalised over languages.

    ``log(n_lang)`` for a neuron equally active in every language; 0 for one active in one only.

    A neuron that never fires has no distribution; it gets the maximum, ``log(n_lang)``.
    """
    total = probs.sum(-1, keepdim=True)
    p = torch.where(total > 0, probs / total.clamp_min(1e-30), 1 / probs.shape[-1])
    return -(p * p.clamp_min(1e-30).log()).sum(-1)


def select_language_neurons(
    probs: Probs,
    *,
    top_rate: float = 0.01,
    filter_rate: float = 0.95,
    bar_rate: float = 0.95,
) -> NeuronMask:
    """Language-specific neurons by the rule of Tang et al. 2024 (their thresholds by default).

    Args:
        probs: activation probabilities ``[layer, neuron, lang]``.
        top_rate: share of all neurons selected (those of lowest LAPE).
        filter_rate: a candidate's probability must exceed this quantile of all probabilities
            in at least one language (neurons that rarely fire anywhere have low LAPE by noise).
        bar_rate: a selected neuron belongs to every language where its probability exceeds
            this quantile of all probabilities.

    Returns:
        ``[lang, layer, neuron]``: True where the neuron is specific to the language.
    """
    for name, value in (("top_rate", top_rate), ("filter_rate", filter_rate), ("bar", bar_rate)):
        if not 0 < value < 1:
            raise PolylensError(f"{name} {value} must be in (0, 1)")
    flat = probs.flatten().float()
    filter_value = flat.quantile(filter_rate) if flat.numel() <= 2**24 else _kth(flat, filter_rate)
    bar = flat.quantile(bar_rate) if flat.numel() <= 2**24 else _kth(flat, bar_rate)
    entropy = lape(probs)
    candidate = (probs > filter_value).any(-1)
    entropy = torch.where(candidate, entropy, torch.inf)
    n_select = min(round(entropy.numel() * top_rate), int(candidate.sum()))
    chosen = torch.zeros(entropy.numel(), dtype=torch.bool)
    if n_select > 0:
        chosen[entropy.flatten().topk(n_select, largest=False).indices] = True
    chosen = chosen.view_as(entropy)
    return (chosen[..., None] & (probs > bar)).permute(2, 0, 1)


def _kth(flat: Tensor, q: float) -> Tensor:
    return flat.kthvalue(max(1, round(flat.numel() * q))).values


def overlap(mask: NeuronMask) -> Float[Tensor, "lang lang"]:
    """Neurons shared by every two languages (diagonal: each language's count)."""
    m = mask.flatten(1).float()
    return m @ m.T


def deactivation_edits(mask: Bool[Tensor, "layer neuron"]) -> dict[str, Edit]:
    """``Apply`` edits that set the masked neurons' ``mlp_act`` values to zero."""
    edits: dict[str, Edit] = {}
    for layer, row in enumerate(mask):
        units = row.nonzero().squeeze(-1)
        if len(units):
            edits[f"mlp_act.{layer}"] = Apply(
                lambda x, units=units: x.index_fill(-1, units.to(x.device), 0.0)
            )
    return edits


@torch.inference_mode()
def token_loss(model: LoadedModel, texts: Sequence[str], *, batch_size: int = 8) -> float:
    """Mean next-token loss (nats per predicted token) of ``texts``, the first token not predicted.

    Targets are the real, non-special tokens after the first position of each text.
    """
    total, n = 0.0, 0
    for _, batch in model.padded_batches(list(texts), batch_size=batch_size):
        logits = model.hf(**batch, use_cache=False).logits[:, :-1]
        targets = batch["input_ids"][:, 1:]
        # A target counts when it is a real token and so is the token it is predicted from.
        valid = valid_tokens(model, batch)[:, 1:] & batch["attention_mask"][:, :-1].bool()
        nll = torch.nn.functional.cross_entropy(
            logits[valid].float(), targets[valid], reduction="sum"
        )
        total += float(nll)
        n += int(valid.sum())
    if n == 0:
        raise PolylensError("no tokens to predict; give longer texts")
    return total / n


def ablation_matrix(
    model: LoadedModel,
    mask: NeuronMask,
    langs: Sequence[str],
    texts: Mapping[str, Sequence[str]],
    *,
    batch_size: int = 8,
) -> tuple[Float[Tensor, " lang"], Float[Tensor, "ablated lang"]]:
    """Next-token loss of each language's held-out text with each language's neurons zeroed.

    Args:
        model: the model.
        mask: ``[lang, layer, neuron]`` from ``select_language_neurons``, languages ``langs``.
        langs: the languages of ``mask``'s first dimension.
        texts: held-out ``{lang: texts}`` to score (any languages).
        batch_size: texts per forward pass.

    Returns:
        ``(baseline [lang], loss [ablated, lang])``: the unedited loss per language of
        ``texts`` and the loss with the neurons of ``langs[i]`` deactivated (row i).
    """
    scored = list(texts)
    baseline = torch.tensor([token_loss(model, texts[t], batch_size=batch_size) for t in scored])
    rows = []
    for i in range(len(langs)):
        with intervene(model, deactivation_edits(mask[i])):
            rows.append([token_loss(model, texts[t], batch_size=batch_size) for t in scored])
    return baseline, torch.tensor(rows)
