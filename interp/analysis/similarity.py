"""Similarity of parallel sentence representations across languages, per layer and language pair.

After "Middle-Layer Representation Alignment for Cross-Lingual Transfer" (retrieval accuracy
between languages peaks in the middle layers) and "Similarity of Sentence Representations in
Multilingual LMs" (the pooling and the similarity index change the picture).

Features are parallel: ``x[lang, layer, item]`` is sentence ``item`` in language ``lang``, the
same sentence in every language. Every metric is a ``[layer, lang, lang]`` tensor computed for
all ordered pairs and layers at once, by batched matrix products on the features' device (layers
are chunked only to bound memory); entry ``[l, a, b]`` reads "queries in ``a``, candidates in
``b``" where the metric has a direction. Every metric is per layer, so ``alignment_metrics``
reads stored features (``parallel_activations``) a chunk of layers at a time: a set larger than
memory gives the same numbers as one held whole.

- ``cos_gap``: mean cosine of aligned pairs minus mean cosine of all non-aligned pairs.
- ``p1_cos`` / ``p1_margin``: retrieval accuracy (P@1) of the translation of each sentence among
  all sentences of the other language, by cosine or by the ratio margin of bitext mining
  (Artetxe & Schwenk 2019): ``cos(x, y) / ((r_k(x) + r_k(y)) / 2)``, ``r_k`` the mean cosine to
  the ``k`` nearest neighbours in the other language, which discounts "hub" sentences.
- ``cka``: linear CKA (Kornblith et al. 2019) of the centred item x item Gram matrices.
- ``svcca``: SVCCA (Raghu et al. 2017): each side reduced by SVD to the components keeping
  ``variance`` of its variance, then the mean canonical correlation between the two.

Cost: the cosines of all sentence pairs of all languages are one ``(lang * item)`` square Gram
matrix per layer, computed once and read by every ordered pair; CKA and SVCCA share one centred
item x item Gram matrix per language and layer, and SVCCA's SVD step is one eigendecomposition of
it per language and layer, reused by every pair the language is in.

CKA and SVCCA centre their inputs, so per-language mean-centring changes only the cosine and
retrieval metrics.

SVCCA keeps at most ``max_components`` directions (default 20). CCA finds the best-correlated
directions between two subspaces of the n-dimensional sample space; with ``k`` directions kept on
each side out of ``n`` sentences, two unrelated subspaces already reach canonical correlations near
1 once ``k`` approaches ``n``, and at ``k >= n`` (152 sentences, a 640-d residual whose 99% of
variance needs nearly all 152 directions) every correlation is exactly 1 whatever the data.
Raghu et al. (2017) apply the 99% rule with many more datapoints than neurons, and their tutorial
(google/svcca, "How many datapoints?") keeps the top 20 directions in its worked example; the cap
keeps ``k`` well below ``n`` so that SVCCA separates related from unrelated representations.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import PolylensError
from interp.extract import extract
from interp.model.models import LoadedModel
from interp.storage.activations import READ_BUDGET, Activations, layer_slices
from interp.storage.store import ActivationStore

__all__ = [
    "METRICS",
    "ParallelActivations",
    "alignment_metrics",
    "center",
    "centred_gram",
    "cka",
    "cka_from_gram",
    "cosine_gap",
    "cosine_metrics",
    "pair_metrics",
    "parallel_activations",
    "parallel_features",
    "retrieval",
    "svcca",
    "svcca_from_gram",
]

METRICS = ("cos_gap", "p1_cos", "p1_margin", "cka", "svcca")
"""The metrics ``pair_metrics`` returns, in order."""

Features = Float[Tensor, "lang layer item d_model"]
PairValues = Float[Tensor, "layer lang lang"]

_DEFAULT_BUDGET = 2**28
"""Bytes one chunk of item x item similarity matrices may take (256 MiB)."""


def center(x: Features) -> Features:
    """Subtract each language's mean at each layer (per-language mean-centring)."""
    return x - x.mean(-2, keepdim=True)


def _as_float(x: Tensor) -> Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _unit_by_layer(x: Features) -> Float[Tensor, "layer lang item d_model"]:
    """Unit vectors, layer-major and contiguous, so that a layer's sentences are one matrix."""
    x = _as_float(x).transpose(0, 1)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    # Written straight into the layer-major layout: one pass over the features, not two.
    return torch.div(x, x.norm(dim=-1, keepdim=True).clamp_min(1e-12), out=out)


def cosine_gap(x: Features) -> PairValues:
    """Mean cosine of aligned pairs minus mean cosine of non-aligned pairs, per layer and pair.

    The non-aligned mean is over all ``n (n - 1)`` pairs ``(i, j != i)``: the expectation of a
    random pairing, exactly, from the sums of the unit vectors (no item x item matrix).
    """
    return _cosine_gap(_unit_by_layer(x))


def _cosine_gap(u: Float[Tensor, "layer lang item d_model"]) -> PairValues:
    n = u.shape[-2]
    if n < 2:
        raise PolylensError("cosine_gap needs at least 2 parallel sentences")
    flat = u.flatten(2)
    aligned = flat @ flat.transpose(-1, -2)
    s = u.sum(-2)
    total = s @ s.transpose(-1, -2)
    return aligned / n - (total - aligned) / (n * (n - 1))


def _running_top(sims: Tensor, k: int) -> Tensor:
    """Mean of each query's ``k`` largest cosines over the candidates of each language.

    ``sims[l, b, j, a, i]`` is the cosine of query ``i`` of language ``a`` and candidate ``j`` of
    language ``b``. The candidate axis is streamed: slice ``j`` is ``[l, b, a, i]`` with
    contiguous rows, and a sorted running top-k is kept by ``k`` max/min steps per slice, which
    on CPU is several times faster than ``topk`` over the whole matrix.

    Returns:
        ``[l, b, a, i]``: the mean cosine of query ``(a, i)`` to its ``k`` nearest candidates in
        ``b``.
    """
    first = sims[:, :, 0]
    top = [first.clone()] + [torch.full_like(first, -torch.inf) for _ in range(k - 1)]
    for j in range(1, sims.shape[2]):
        c = sims[:, :, j]
        for t in range(k):
            lower = torch.minimum(top[t], c)
            torch.maximum(top[t], c, out=top[t])
            c = lower
    return torch.stack(top).mean(0)


def _p1(sims: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """P@1 by cosine and by ratio margin from the cosines ``[l, b, j, a, i]``, as ``[l, a, b]``.

    Query ``(a, i)`` is retrieved correctly when no candidate outranks its translation
    ``(b, i)``; a tie goes to the earlier index, as ``argmax`` does, so candidate ``j < i`` wins a
    tie: for ``i > j`` it is compared against the next float below the translation's score.
    Each query keeps the largest lead of any candidate over that threshold (``maximum`` and
    ``-``, where a running argmax's ``where`` / ``masked_fill_`` cost ten times more on CPU).
    The margin's candidate neighbourhood: candidate ``(b, j)``'s ``k`` nearest queries of ``a``
    are, by symmetry of the cosine, query ``(b, j)``'s ``k`` nearest candidates in ``a``.
    """
    n = sims.shape[2]
    r = _running_top(sims, k)
    # Halving is exact in binary floating point: r/2 + r_cand/2 == (r + r_cand)/2, one op less.
    half = r / 2
    half_cand = half.transpose(1, 2)
    aligned_cos = sims.diagonal(dim1=2, dim2=4)
    aligned_margin = aligned_cos / (half + half_cand).clamp_min(1e-6)
    below = torch.tensor(-torch.inf, dtype=sims.dtype, device=sims.device)
    threshold_cos = torch.nextafter(aligned_cos, below)
    threshold_margin = torch.nextafter(aligned_margin, below)
    lead_cos = torch.full_like(r, -torch.inf)
    lead_margin = torch.full_like(r, -torch.inf)
    for j in range(n):
        threshold_cos[..., j] = aligned_cos[..., j]
        threshold_margin[..., j] = aligned_margin[..., j]
        score = sims[:, :, j]
        torch.maximum(lead_cos, score - threshold_cos, out=lead_cos)
        margin = score / (half + half_cand[..., j, None]).clamp_min(1e-6)
        torch.maximum(lead_margin, margin - threshold_margin, out=lead_margin)
    return tuple((lead <= 0).float().mean(-1).transpose(1, 2) for lead in (lead_cos, lead_margin))


def retrieval(
    x: Features, *, k: int = 4, budget: int = _DEFAULT_BUDGET
) -> tuple[PairValues, PairValues]:
    """P@1 of retrieving each sentence's translation, by cosine and by ratio margin.

    Args:
        x: parallel features.
        k: neighbours in the margin's denominator (clipped to the number of sentences).
        budget: bytes the cosine matrices of one chunk of layers may take (at most
            ``_STREAM_BUDGET``, 32 MiB, whatever is given: chunks that fit in cache are faster).

    Returns:
        ``(p1_cos, p1_margin)``, each ``[layer, lang, lang]``: entry ``[l, a, b]`` is the share of
        sentences of ``a`` whose nearest sentence in ``b`` is their translation.
    """
    return _retrieval(_unit_by_layer(x), k=k, budget=budget)


_STREAM_BUDGET = 2**25
"""Bytes of cosines streamed at once (32 MiB): a few layers, so that the running top-k passes
read the cosine matrix while it is still in cache."""


def _retrieval(
    u: Float[Tensor, "layer lang item d_model"], *, k: int, budget: int
) -> tuple[PairValues, PairValues]:
    n_layer, n_lang, n, _ = u.shape
    k = max(1, min(k, n))
    p_cos = u.new_empty(n_layer, n_lang, n_lang)
    p_margin = u.new_empty(n_layer, n_lang, n_lang)
    per_layer = (n_lang * n) ** 2 * u.element_size()
    for chunk in layer_slices(n_layer, per_layer, min(budget, _STREAM_BUDGET)):
        flat = u[chunk].flatten(1, 2)
        # One Gram matrix of every sentence of every language per layer; it is symmetric, so
        # viewed as [l, b, j, a, i] it also reads "query (a, i), candidate (b, j)".
        sims = (flat @ flat.transpose(-1, -2)).view(-1, n_lang, n, n_lang, n)
        p_cos[chunk], p_margin[chunk] = _p1(sims, k)
    return p_cos, p_margin


def centred_gram(
    x: Features, *, budget: int = _DEFAULT_BUDGET
) -> Float[Tensor, "lang layer item item"]:
    """Item x item Gram matrices of the per-language centred features, in float64.

    The one quantity CKA and SVCCA both read: float64 because SVCCA's eigendecomposition of it
    squares the condition number of the features (residual streams have a few directions orders
    of magnitude larger than the rest).
    """
    n_lang, n_layer, n, d = x.shape
    out = torch.empty(n_lang, n_layer, n, n, dtype=torch.float64, device=x.device)
    per_layer = n_lang * n * d * 8
    for chunk in layer_slices(n_layer, per_layer, min(budget, _STREAM_BUDGET)):
        xd = x[:, chunk].double()
        gram = xd @ xd.transpose(-1, -2)
        # Centring the features is double-centring their Gram matrix: K - row means - column
        # means + grand mean (in float64 the cancellation costs nothing measurable).
        row = gram.mean(-1, keepdim=True)
        out[:, chunk] = gram - row - row.transpose(-1, -2) + row.mean(-2, keepdim=True)
    return out


def cka_from_gram(gram: Float[Tensor, "lang layer item item"]) -> PairValues:
    """Linear CKA of every two languages from their centred Gram matrices."""
    flat = gram.flatten(-2)
    flat = flat / flat.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    return torch.einsum("alq,blq->lab", flat, flat)


def cka(x: Features) -> PairValues:
    """Linear CKA between every two languages' representations at every layer.

    ``CKA(X, Y) = <K, L>_F / (|K|_F |L|_F)`` with ``K = Xc Xc^T`` and ``L = Yc Yc^T`` the
    item x item Gram matrices of the column-centred features: invariant to rotations and
    isotropic scaling of either side.
    """
    return cka_from_gram(centred_gram(x)).to(_as_float(x).dtype)


def svcca_from_gram(
    gram: Float[Tensor, "lang layer item item"],
    *,
    variance: float = 0.99,
    max_components: int | None = 20,
    budget: int = _DEFAULT_BUDGET,
) -> PairValues:
    """SVCCA of every two languages from their centred Gram matrices (see ``svcca``)."""
    if not 0 < variance <= 1:
        raise PolylensError(f"variance {variance} must be in (0, 1]")
    if max_components is not None and max_components < 1:
        raise PolylensError(f"max_components {max_components} must be at least 1")
    # The Gram matrix's eigenvectors are the centred features' left singular vectors and its
    # eigenvalues their squared singular values: one eigendecomposition per language and layer.
    lam, vec = torch.linalg.eigh(gram)
    lam, vec = lam.flip(-1).clamp_min(0), vec.flip(-1)
    share = lam.cumsum(-1) / lam.sum(-1, keepdim=True).clamp_min(1e-300)
    # Components up to and including the first whose cumulative share reaches the target.
    kept = (share < variance - 1e-7).sum(-1) + 1
    # Drop null directions (singular value below 1e-6 of the largest).
    kept = torch.minimum(kept, (lam > lam[..., :1] * 1e-12).sum(-1).clamp_min(1))
    if max_components is not None:
        kept = kept.clamp_max(max_components)
    width = int(kept.max())
    mask = torch.arange(width, device=vec.device) < kept[..., None]
    q = vec[..., :width] * mask[..., None, :]
    n_lang, n_layer = gram.shape[:2]
    out = q.new_empty(n_layer, n_lang, n_lang)
    min_k = torch.minimum(kept[:, None], kept[None, :]).permute(2, 0, 1).to(q.dtype)
    per_layer = 2 * n_lang * n_lang * width * width * q.element_size()
    for chunk in layer_slices(n_layer, per_layer, budget):
        cross = torch.einsum("alik,blim->labkm", q[:, chunk], q[:, chunk])
        # Singular values as square roots of the eigenvalues of cross^T cross: LAPACK's SVD
        # converges slowly on these zero-padded products, the symmetric solver does not.
        sv = torch.linalg.eigvalsh(cross.transpose(-1, -2) @ cross).clamp(0, 1).sqrt()
        mk = min_k[chunk]
        out[chunk] = sv.sum(-1).clamp_max(mk) / mk.clamp_min(1)
    return out


def svcca(
    x: Features,
    *,
    variance: float = 0.99,
    max_components: int | None = 20,
    budget: int = _DEFAULT_BUDGET,
) -> PairValues:
    """SVCCA: SVD to the components keeping ``variance`` of the variance, then mean CCA.

    The canonical correlations of two data matrices are the singular values of ``Qa^T Qb``,
    ``Q`` an orthonormal basis of each one's (centred) column space; after the SVD step that
    basis is the kept left singular vectors. Padding the kept sets to a common width with zero
    columns adds only zero singular values, so every pair and layer is one batched symmetric
    eigensolve (in float64: square roots of small eigenvalues amplify rounding).

    Args:
        x: parallel features.
        variance: share of each side's variance the SVD step keeps.
        max_components: at most this many directions per side (``None``: no cap). Keep it well
            below the number of sentences: CCA of ``k`` directions out of ``n`` sentences tends
            to 1 for unrelated data as ``k`` approaches ``n`` (module docstring).
        budget: bytes one chunk of layers' intermediate matrices may take.

    Returns:
        ``[layer, lang, lang]``: the mean of the ``min(ka, kb)`` canonical correlations.
    """
    values = svcca_from_gram(
        centred_gram(x, budget=budget),
        variance=variance,
        max_components=max_components,
        budget=budget,
    )
    return values.to(_as_float(x).dtype)


def cosine_metrics(
    x: Features, *, k: int = 4, budget: int = _DEFAULT_BUDGET
) -> dict[str, PairValues]:
    """``cos_gap``, ``p1_cos`` and ``p1_margin``: the metrics per-language centring changes."""
    u = _unit_by_layer(x)
    p_cos, p_margin = _retrieval(u, k=k, budget=budget)
    return {"cos_gap": _cosine_gap(u), "p1_cos": p_cos, "p1_margin": p_margin}


def pair_metrics(
    x: Features,
    *,
    k: int = 4,
    variance: float = 0.99,
    max_components: int | None = 20,
    budget: int = _DEFAULT_BUDGET,
) -> dict[str, PairValues]:
    """Every metric of ``METRICS`` for all layers and ordered language pairs of ``x``.

    CKA and SVCCA read one centred Gram matrix per language and layer, computed once.
    """
    values = cosine_metrics(x, k=k, budget=budget)
    gram = centred_gram(x, budget=budget)
    dtype = values["p1_cos"].dtype
    return values | {
        "cka": cka_from_gram(gram).to(dtype),
        "svcca": svcca_from_gram(
            gram, variance=variance, max_components=max_components, budget=budget
        ).to(dtype),
    }


def drops_first_token(model: LoadedModel, prompts: Sequence[str], pooling: str) -> bool:
    """Whether ``pooling`` over ``prompts`` leaves their shared leading special token out.

    A decoder's mean does, when every prompt starts with the same BOS-like token (its residual
    is the same everywhere and can be orders of magnitude larger); an encoder's never does.
    """
    if pooling != "mean" or not model.causal:
        return False
    firsts = {row[0] for row in model.tokenize(prompts)}
    return len(firsts) == 1 and firsts <= _bos_ids(model)


def _bos_ids(model: LoadedModel) -> set[int]:
    return set(model.tokenizer.all_special_ids)


@dataclass(frozen=True)
class ParallelActivations:
    """Pooled residuals of parallel sentences, read a chunk of layers at a time.

    ``acts`` holds the sentences of every language in turn (one row each); mean pooling that
    leaves out a leading special token keeps that token's residual ``first`` ``[1, layer,
    d_model]`` and every sentence's token count ``lengths`` ``[prompt, 1, 1]``, applied per chunk.
    """

    acts: Activations
    langs: list[str]
    first: Float[Tensor, "1 layer d_model"] | None = None
    lengths: Float[Tensor, "prompt 1 1"] | None = None

    def chunks(self, *, budget: int | None = READ_BUDGET) -> Iterator[tuple[slice, Features]]:
        """Features ``[lang, k, item, d_model]`` of ``k`` consecutive layers at a time.

        Each comes with the slice of ``layers`` it holds; a chunk's activations take at most
        ``budget`` bytes (``None``: every layer in one chunk).
        """
        for span, x in self.acts.layer_chunks(budget=budget):
            if self.first is not None:
                lengths = self.lengths.to(x.device)
                x = (x * lengths - self.first[:, span].to(x.device)) / (lengths - 1)
            yield span, x.reshape(len(self.langs), -1, *x.shape[1:]).transpose(1, 2)

    def features(self) -> Features:
        """Every layer at once, ``[lang, layer, item, d_model]``."""
        ((_, x),) = self.chunks(budget=None)
        return x


def parallel_activations(
    model: LoadedModel,
    sentences: Mapping[str, Sequence[str]],
    *,
    pooling: str,
    batch_size: int = 16,
    store: ActivationStore | str | Path | None = None,
    progress: bool = False,
) -> ParallelActivations:
    """Residuals of parallel sentences at every layer, read from the store a chunk at a time.

    Args:
        model: the model.
        sentences: ``{lang: sentences}``, the same number of sentences per language.
        pooling: ``last`` (the last token) or ``mean`` (over the sentence's tokens, a leading
            special token such as BOS left out: its residual is the same for every prompt and,
            in models with attention sinks, orders of magnitude larger than the others, so it
            would swamp the mean). An encoder's mean is over all its real tokens, as sentence
            encoders pool: its first token ([CLS], <s>) reads the whole sentence.
        batch_size: prompts per forward pass.
        store: activation store (a second run reads its features back; the features of a
            stored entry are read from disk a chunk of layers at a time).
        progress: show a progress bar.
    """
    if pooling not in ("last", "mean"):
        raise PolylensError(f"unknown pooling {pooling!r}; use last or mean")
    langs = list(sentences)
    counts = {len(v) for v in sentences.values()}
    if len(counts) != 1:
        raise PolylensError("parallel sentences need the same number of sentences per language")
    prompts = [s for lang in langs for s in sentences[lang]]
    options = dict(layers="all", batch_size=batch_size, store=store, progress=progress)
    acts = extract(model, prompts, positions=pooling, **options)
    if drops_first_token(model, prompts, pooling):
        lengths = torch.tensor([len(row) for row in model.tokenize(prompts)], dtype=acts.dtype)
        if int(lengths.min()) < 2:
            raise PolylensError("a sentence tokenizes to its special token alone")
        # Position 0 sees only itself: one prompt gives every prompt's first residual.
        first = extract(model, prompts[:1], positions=0, **options).tensor
        return ParallelActivations(acts, langs, first, lengths[:, None, None])
    return ParallelActivations(acts, langs)


def parallel_features(
    model: LoadedModel,
    sentences: Mapping[str, Sequence[str]],
    *,
    pooling: str,
    batch_size: int = 16,
    store: ActivationStore | None = None,
    progress: bool = False,
) -> Features:
    """Residual features of parallel sentences at every layer: ``[lang, layer, item, d_model]``.

    Every layer at once; ``parallel_activations`` (the same arguments) reads them a chunk of
    layers at a time, for sets larger than memory.
    """
    return parallel_activations(
        model, sentences, pooling=pooling, batch_size=batch_size, store=store, progress=progress
    ).features()


def alignment_metrics(
    features: ParallelActivations,
    *,
    k: int = 4,
    variance: float = 0.99,
    max_components: int | None = 20,
    budget: int = _DEFAULT_BUDGET,
    read_budget: int = READ_BUDGET // 4,
    device: str | torch.device | None = None,
) -> dict[str, dict[str, PairValues]]:
    """Every metric of ``METRICS``, raw and per-language centred, reading a chunk of layers at once.

    ``raw`` is ``pair_metrics`` of the features, ``centred`` the cosine metrics of the centred
    features beside the raw CKA and SVCCA (which centre by themselves). Only one chunk of
    ``read_budget`` bytes of activations is read at a time (moved to ``device``), so the set
    may be larger than memory; the metrics' intermediates (unit vectors, a centred copy, float64
    Gram inputs) take several times a chunk, hence a quarter of ``READ_BUDGET`` by default. The
    results, ``[layer, lang, lang]`` each, are on ``device``.
    """
    n_layers, out = features.acts.shape[1], None
    for span, x in features.chunks(budget=read_budget):
        x = x.to(device) if device is not None else x
        values = pair_metrics(
            x, k=k, variance=variance, max_components=max_components, budget=budget
        )
        centred = cosine_metrics(center(x), k=k, budget=budget)
        if out is None:
            # Written in place: small results kept between chunks would pin the heap above
            # each chunk's freed intermediates, and the heap would grow chunk after chunk.
            out = {
                name: {m: v.new_empty(n_layers, *v.shape[1:]) for m, v in part.items()}
                for name, part in (("raw", values), ("centred", centred))
            }
        for name, part in (("raw", values), ("centred", centred)):
            for m, v in part.items():
                out[name][m][span] = v
    return {
        "raw": out["raw"],
        "centred": out["centred"] | {m: out["raw"][m] for m in ("cka", "svcca")},
    }
