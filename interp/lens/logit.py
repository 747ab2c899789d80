"""Logit lens and tuned lens on cached residual activations.

The lens decodes every layer the way the model decodes its last one: the model's own final norm,
then its unembedding (then the final-logit soft-capping where the architecture has one). At the
last layer it therefore reproduces the model's own next-token distribution.

Vocabularies are large (262,144 for Gemma 3), so logits are computed in row chunks that fit a
memory budget, and only what is asked for is kept: the log-probability mass of given token sets,
the entropy, and the top-k tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import PolylensError
from interp.model.models import LoadedModel
from interp.model.placement import execution_device
from interp.storage.activations import Activations

TokenSets = Sequence[Mapping[str, Sequence[int]]]
"""Per prompt, named sets of token ids (the same names for every prompt)."""


@dataclass
class LensOutput:
    """What a lens pass keeps, per prompt and layer."""

    layers: list[int]
    set_names: list[str]
    set_logprobs: Float[Tensor, "prompt layer set"]
    """log of the probability mass on each token set (-inf for an empty set)."""
    entropy: Float[Tensor, "prompt layer"]
    """Entropy of the decoded distribution, in nats."""
    top_ids: Int[Tensor, "prompt layer k"]
    top_logprobs: Float[Tensor, "prompt layer k"]

    def probs(self, name: str) -> Float[Tensor, "prompt layer"]:
        """Probability mass on the token set ``name``."""
        return self.set_logprobs[..., self.set_names.index(name)].exp()


def decode_logits(
    model: LoadedModel, h: Float[Tensor, "row d_model"]
) -> Float[Tensor, "row vocab"]:
    """The model's own route from residual vectors to float32 logits.

    Final norm, unembedding, then the head's own steps (``finish_logits``): at the last layer
    this is exactly how the model computes its next-token logits.
    """
    unembed, norm = model.unembed, model.final_norm
    # With a device map the norm and the unembedding may compute on different devices.
    h = h.to(execution_device(norm, model.device), unembed.weight.dtype)
    return finish_logits(model, unembed(norm(h).to(execution_device(unembed, model.device))))


def finish_logits(model: LoadedModel, logits: Float[Tensor, "*row vocab"]) -> Tensor:
    """What the model's head does after its unembedding, in float32.

    Cohere's logit scale, then Gemma 2's final-logit soft-capping, where the architecture has them.
    """
    logits = logits.float()
    if model.logit_scale is not None:
        logits = logits * model.logit_scale
    if model.softcap:
        logits = torch.tanh(logits / model.softcap) * model.softcap
    return logits


def _set_index(
    token_sets: TokenSets | None, n_prompts: int
) -> tuple[list[str], Int[Tensor, "prompt set m"], Tensor]:
    """Pad per-prompt token sets into an index tensor and a validity mask."""
    if not token_sets:
        return [], torch.zeros(n_prompts, 0, 1, dtype=torch.long), torch.zeros(n_prompts, 0, 1)
    if len(token_sets) != n_prompts:
        raise PolylensError(f"got token sets for {len(token_sets)} prompts, need {n_prompts}")
    names = list(token_sets[0])
    width = max(1, max(len(ids) for sets in token_sets for ids in sets.values()))
    index = torch.zeros(n_prompts, len(names), width, dtype=torch.long)
    valid = torch.zeros(n_prompts, len(names), width, dtype=torch.bool)
    for p, sets in enumerate(token_sets):
        if list(sets) != names:
            raise PolylensError(f"prompt {p} has token sets {list(sets)}, expected {names}")
        for s, name in enumerate(names):
            ids = list(sets[name])
            index[p, s, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            valid[p, s, : len(ids)] = True
    return names, index, valid


@torch.inference_mode()
def apply_lens(
    model: LoadedModel,
    acts: Activations,
    *,
    token_sets: TokenSets | None = None,
    top_k: int = 5,
    translators: torch.nn.Module | None = None,
    memory_budget_mb: float = 512,
    with_entropy: bool = True,
    progress: bool = False,
) -> LensOutput:
    """Decode every layer of ``acts`` (one row per prompt) and keep only what is asked for.

    Args:
        model: the model the activations came from.
        acts: activations with one position per prompt, read a chunk of layers at a time
            (``acts.layer_chunks``: a stored set larger than memory is never held whole).
        token_sets: per prompt, named token-id sets whose probability mass to keep.
        top_k: how many top tokens to keep per prompt and layer.
        translators: a ``TunedLens`` for the tuned lens; ``None`` for the logit lens.
        memory_budget_mb: the most memory the vocabulary-sized intermediates may take at once.
        with_entropy: compute the entropy (one more pass over the vocabulary); NaN otherwise.
        progress: show a tqdm bar over layers.
    """
    model.require_next_token("the logit lens" if translators is None else "the tuned lens")
    if acts.meta.get("model", model.identity) != model.identity:
        raise PolylensError(
            f"activations come from {acts.meta['model']}, not from {model.identity}; "
            "decode them with the model that produced them"
        )
    n_prompts, n_layers = len(acts.prompts), len(acts.layers)
    vocab = model.unembed.weight.shape[0]
    names, index, valid = _set_index(token_sets, n_prompts)
    # logits, log-probs and exp(log-probs): three float32 [rows, vocab] tensors at once.
    rows = max(1, int(memory_budget_mb * 2**20 // (3 * 4 * vocab)))
    set_lp = torch.full((n_prompts, n_layers, len(names)), -math.inf)
    entropy = torch.full((n_prompts, n_layers), math.nan)
    top_ids = torch.empty(n_prompts, n_layers, top_k, dtype=torch.long)
    top_lp = torch.empty(n_prompts, n_layers, top_k)
    # A chunk of layers at a time: a set read from the store is never held whole.
    chunks, span, x = acts.layer_chunks(), slice(0, 0), None
    for li, layer in enumerate(tqdm(acts.layers, desc="lens", unit="layer", disable=not progress)):
        if li >= span.stop:
            span, x = next(chunks)  # [prompt, layers of span, d]
        for start in range(0, n_prompts, rows):
            stop = min(start + rows, n_prompts)
            h = x[start:stop, li - span.start].to(model.device)
            if translators is not None:
                h = translators(h.float(), layer)
            logp = torch.log_softmax(decode_logits(model, h), dim=-1)
            if with_entropy:
                entropy[start:stop, li] = -torch.einsum("rv,rv->r", logp.exp(), logp).cpu()
            top, ids = logp.topk(top_k, dim=-1)
            top_lp[start:stop, li], top_ids[start:stop, li] = top.cpu(), ids.cpu()
            if names:
                idx = index[start:stop].to(logp.device)
                gathered = logp.gather(1, idx.flatten(1)).view(idx.shape)
                gathered = gathered.masked_fill(~valid[start:stop].to(logp.device), -math.inf)
                set_lp[start:stop, li] = torch.logsumexp(gathered, dim=-1).cpu()
    return LensOutput(list(acts.layers), names, set_lp, entropy, top_ids, top_lp)


# -- token sets ---------------------------------------------------------------------------------
def first_tokens(tokenizer, word: str) -> list[int]:
    """First token of each surface variant of ``word``.

    Variants: with and without a leading space, capitalised and lower case. Tokens that decode to
    whitespace alone are dropped (a leading space before a Chinese word is often its own token).
    """
    variants = {word, word.lower(), word[:1].upper() + word[1:]}
    variants |= {" " + v for v in variants}
    out = []
    for v in sorted(variants):
        ids = tokenizer(v, add_special_tokens=False)["input_ids"]
        if ids and tokenizer.decode(ids[:1]).strip() and ids[0] not in out:
            out.append(ids[0])
    return out


def collisions(forms: Mapping[str, Sequence[str]], tokenizer) -> dict[tuple[str, str], list[int]]:
    """First tokens shared between languages' forms of one concept (e.g. ``Paris`` in en, fr)."""
    sets = {
        lang: {t for form in lang_forms for t in first_tokens(tokenizer, form)}
        for lang, lang_forms in forms.items()
    }
    langs = list(sets)
    out = {}
    for i, a in enumerate(langs):
        for b in langs[i + 1 :]:
            shared = sorted(sets[a] & sets[b])
            if shared:
                out[(a, b)] = shared
    return out
