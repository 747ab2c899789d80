"""Scores under per-row edits: many candidate directions judged in one forward pass.

The prompt batch is stacked once per candidate and each copy is edited with its own direction
(``row_edits``: ablation everywhere, or addition at one layer); the tokens every prompt shares (a
few-shot dialogue, a system turn) run once per candidate and their keys and values are reused
(``stacked_last_logits``). ``scores_under_edits`` turns the last-token logits into the refusal
score and the KL to the plain run that ``interp.analysis.directions`` selects a direction by.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from interp.analysis.refusal import refusal_score
from interp.interventions import Apply, directional_ablation, intervene
from interp.lens.logit import finish_logits
from interp.metrics import kl_divergence
from interp.model.batching import pad_batch
from interp.model.footprint import Pass
from interp.model.models import LoadedModel
from interp.model.sites import layer_site

EditsFor = Callable[[int], dict]
"""``edits_for(r)``: the edits of a stacked batch whose every copy spans ``r`` rows."""


def unit_rows(vectors: Tensor) -> Tensor:
    """``vectors`` scaled to unit length along the last axis; zero rows stay zero."""
    norms = vectors.norm(dim=-1, keepdim=True)
    return torch.where(norms > 0, vectors / norms.clamp_min(1e-30), torch.zeros_like(vectors))


def _row_ablation(units: Tensor) -> Apply:
    """Ablate a different unit direction from each row of the batch (zero rows: unchanged)."""

    def fn(x: Tensor) -> Tensor:
        # In float32, rounded once, as ``Ablate`` does.
        xf, u = x.float(), units.to(x.device, torch.float32)[:, None, :]
        return (xf - (xf * u).sum(-1, keepdim=True) * u).to(x.dtype)

    return Apply(fn)


def _row_addition(vectors: Tensor) -> Apply:
    """Add a different vector to each row of the batch, at every position."""
    return Apply(lambda x: x + vectors.to(x.device, x.dtype)[:, None, :])


def row_edits(
    model: LoadedModel,
    *,
    ablate: Float[Tensor, "row d_model"] | None = None,
    add: Float[Tensor, "row d_model"] | None = None,
    add_layers: Sequence[int] | None = None,
    coeff: float = 1.0,
) -> dict:
    """Edits for a stacked batch, one direction per row.

    Row r ablates ``ablate[r]`` everywhere and adds ``coeff * add[r]`` at residual layer
    ``add_layers[r]``.
    """
    edits: dict = {}
    if ablate is not None:
        edit = _row_ablation(unit_rows(ablate.float()))
        edits |= {k: edit for k in directional_ablation(torch.ones(model.d_model))}
    if add is not None:
        layers = torch.tensor(list(add_layers))
        for layer in sorted(set(layers.tolist())):
            mask = (layers == layer).float()[:, None]
            site = layer_site(layer).name
            edits.setdefault(site, [])
            edits[site] = [*edits[site], _row_addition(coeff * add.float() * mask)]
    return edits


def last_logits(model: LoadedModel, batch: dict) -> Float[Tensor, "row vocab"]:
    """Next-token logits at the last position of a left-padded batch (no full unembedding)."""
    return _unembed(model, model.body(**batch, use_cache=False)[0][:, -1])


def _unembed(
    model: LoadedModel,
    hidden: Float[Tensor, "row d_model"],
) -> Float[Tensor, "row vocab"]:
    return finish_logits(model, model.unembed(hidden))


_MIN_SHARED_PREFIX = 8
"""Fewer shared tokens than this are not worth a forward pass of their own."""


def shared_prefix_length(ids: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each prompt at least one token of its own.

    Counted on token ids, not text: a tokenizer may merge the template's last character with
    the instruction's first word.
    """
    limit = min(len(x) for x in ids) - 1
    first, count = ids[0], 0
    while count < limit and all(x[count] == first[count] for x in ids):
        count += 1
    return count


def reused_prefix_length(ids: Sequence[Sequence[int]], reuse_prefix: bool = True) -> int:
    """Tokens ``stacked_last_logits`` runs once per copy and reuses (0: prompts run whole)."""
    shared = shared_prefix_length(ids) if reuse_prefix else 0
    return shared if shared >= _MIN_SHARED_PREFIX else 0


def stacked_passes(
    model: LoadedModel,
    name: str,
    prompts: Sequence[str],
    *,
    candidates: int = 1,
    rows_per_pass: int | None = None,
    reuse_prefix: bool = True,
) -> list[Pass]:
    """The forward passes of ``scores_under_edits`` or ``plain_logits``, for ``polylens plan``.

    ``candidates`` stacked copies of ``prompts``, as many per pass as ``rows_per_pass`` allows
    (``None``: all in one, as ``plain_logits``); with a reused prefix, the prefix runs once per
    copy and each prompt's own tokens on its keys and values. Logits at the last token.
    """
    ids = model.tokenize(list(prompts))
    n = len(ids)
    per_pass = candidates if rows_per_pass is None else max(1, rows_per_pass // n)
    chunks = Counter(min(per_pass, candidates - s) for s in range(0, candidates, per_pass))
    shared = reused_prefix_length(ids, reuse_prefix)
    own = tuple(len(x) - shared for x in ids)
    passes = []
    for copies, times in sorted(chunks.items(), reverse=True):
        if shared:
            prefix = (shared,) * copies
            passes.append(Pass(f"{name} (shared prefix)", prefix, copies, repeats=times))
        passes.append(Pass(name, own * copies, copies * n, logits="last", repeats=times))
    return passes


def stacked_last_logits(
    model: LoadedModel,
    ids: Sequence[Sequence[int]],
    copies: int,
    edits_for: EditsFor,
    *,
    reuse_prefix: bool = True,
) -> Float[Tensor, "row vocab"]:
    """Last-position logits of ``copies`` stacked copies of the prompts ``ids`` (copy-major).

    With ``reuse_prefix``, the tokens all prompts share (e.g. a few-shot dialogue) run once per
    copy under that copy's edits, and their keys and values are reused by each prompt's own
    tokens: the same numbers as running every full prompt (edits here act on each position
    alone), for a fraction of the work when the shared prefix is long.
    """
    n = len(ids)
    shared = reused_prefix_length(ids, reuse_prefix)
    pad, device = model.tokenizer.pad_token_id, model.device
    if not shared:
        batch = pad_batch([x for _ in range(copies) for x in ids], pad, device)
        with intervene(model, edits_for(n)):
            return last_logits(model, batch)
    prefix = torch.tensor([list(ids[0][:shared])] * copies, device=device)
    with intervene(model, edits_for(1)):
        cache = model.body(input_ids=prefix, use_cache=True).cache
    cache.batch_repeat_interleave(n)
    # Right-padded own tokens: causal attention keeps pads (after them) out of real positions.
    own = [x[shared:] for _ in range(copies) for x in ids]
    lengths = torch.tensor([len(x) for x in own])
    width = int(lengths.max())
    input_ids = torch.full((len(own), width), pad, dtype=torch.long)
    for row, x in enumerate(own):
        input_ids[row, : len(x)] = torch.tensor(x, dtype=torch.long)
    positions = (shared + torch.arange(width)).expand(len(own), width)
    with intervene(model, edits_for(n)):
        hidden = model.body(
            input_ids=input_ids.to(device),
            position_ids=positions.to(device),
            cache=cache,
            use_cache=True,
        )[0]
    return _unembed(model, hidden[torch.arange(len(own)), (lengths - 1).to(hidden.device)])


@torch.inference_mode()
def scores_under_edits(
    model: LoadedModel,
    prompts: Sequence[str],
    opener_ids: Sequence[int],
    *,
    ablate: Float[Tensor, "cand d_model"] | None = None,
    add: Float[Tensor, "cand d_model"] | None = None,
    add_layers: Sequence[int] | None = None,
    coeff: float = 1.0,
    reference: Float[Tensor, "prompt vocab"] | None = None,
    rows_per_pass: int = 64,
    reuse_prefix: bool = True,
    progress: str | None = None,
) -> tuple[Float[Tensor, "cand prompt"], Float[Tensor, "cand prompt"] | None]:
    """Refusal score of every prompt under every candidate, and the KL from ``reference``.

    ``reference`` holds plain log-probs of the *last* ``len(reference)`` prompts (so harmful and
    harmless prompts share a pass and only the harmless ones get a KL): KL(plain || edited).

    Candidate c edits copy c of the prompt batch; as many copies share one forward pass as fit
    in ``rows_per_pass`` rows (at least one candidate per pass). With neither ``ablate`` nor
    ``add``, one unedited "candidate". ``reuse_prefix``: see ``stacked_last_logits``.
    ``progress``: a tqdm bar over candidates with this label.
    """
    ids = model.tokenize(list(prompts))
    n = len(ids)
    k = next((len(t) for t in (ablate, add) if t is not None), 1)
    per_pass = max(1, rows_per_pass // n)
    scores, kls = [], []
    bar = tqdm(total=k, desc=progress, unit="cand", disable=progress is None, leave=False)
    for start in range(0, k, per_pass):
        chunk = list(range(start, min(k, start + per_pass)))

        def edits_for(r: int, chunk: list[int] = chunk) -> dict:
            rows = [c for c in chunk for _ in range(r)]  # copy-major, r rows per candidate
            return row_edits(
                model,
                ablate=None if ablate is None else ablate[rows],
                add=None if add is None else add[rows],
                add_layers=None if add is None else [add_layers[c] for c in rows],
                coeff=coeff,
            )

        logits = stacked_last_logits(model, ids, len(chunk), edits_for, reuse_prefix=reuse_prefix)
        scores.append(refusal_score(logits, opener_ids).view(len(chunk), n).cpu())
        if reference is not None:
            m = len(reference)
            tail = logits.view(len(chunk), n, -1)[:, n - m :].log_softmax(-1)
            ref = reference.to(logits.device)[None].expand_as(tail)
            kls.append(kl_divergence(ref, tail).cpu())
        bar.update(len(chunk))
    bar.close()
    return torch.cat(scores), (torch.cat(kls) if kls else None)


@torch.inference_mode()
def plain_logits(
    model: LoadedModel, prompts: Sequence[str], *, reuse_prefix: bool = True
) -> Float[Tensor, "prompt vocab"]:
    """Unedited next-token logits at each prompt's last token, in one stacked pass."""
    return stacked_last_logits(
        model, model.tokenize(list(prompts)), 1, lambda _: {}, reuse_prefix=reuse_prefix
    )


@torch.inference_mode()
def plain_logprobs(model: LoadedModel, prompts: Sequence[str], *, batch_size: int = 16) -> Tensor:
    """Unedited next-token log-probabilities at each prompt's last token."""
    parts = []
    for _, batch in model.padded_batches(list(prompts), batch_size=batch_size):
        parts.append(last_logits(model, batch).log_softmax(-1))
    return torch.cat(parts)
