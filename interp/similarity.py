"""Similarity of parallel sentence representations across languages, per layer and language pair.

After "Middle-Layer Representation Alignment for Cross-Lingual Transfer" (retrieval accuracy
between languages peaks in the middle layers) and "Similarity of Sentence Representations in
Multilingual LMs" (the pooling and the similarity index change the picture).

Features are parallel: ``x[lang, layer, item]`` is sentence ``item`` in language ``lang``, the
same sentence in every language. Every metric is a ``[layer, lang, lang]`` tensor computed for
all ordered pairs and layers at once, by batched matrix products on the features' device (layers
are chunked only to bound memory); entry ``[l, a, b]`` reads "queries in ``a``, candidates in
``b``" where the metric has a direction.

- ``cos_gap``: mean cosine of aligned pairs minus mean cosine of all non-aligned pairs.
- ``p1_cos`` / ``p1_margin``: retrieval accuracy (P@1) of the translation of each sentence among
  all sentences of the other language, by cosine or by the ratio margin of bitext mining
  (Artetxe & Schwenk 2019): ``cos(x, y) / ((r_k(x) + r_k(y)) / 2)``, ``r_k`` the mean cosine to
  the ``k`` nearest neighbours in the other language, which discounts "hub" sentences.
- ``cka``: linear CKA (Kornblith et al. 2019) of the centred item x item Gram matrices.
- ``svcca``: SVCCA (Raghu et al. 2017): each side reduced by SVD to the components keeping
  ``variance`` of its variance, then the mean canonical correlation between the two.

CKA and SVCCA centre their inputs, so per-language mean-centring changes only the cosine and
retrieval metrics. SVCCA with fewer sentences than kept components is optimistic (CCA fits any
two subspaces that fill the sample space); compare it across layers and pairs, not as an absolute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.data.languages import LANGUAGES
from interp.errors import PolylensError
from interp.extract import extract
from interp.models import LoadedModel
from interp.store import ActivationStore

__all__ = [
    "METRICS",
    "PairGroups",
    "center",
    "cka",
    "cosine_gap",
    "group_curves",
    "pair_groups",
    "pair_metrics",
    "parallel_features",
    "peak_layers",
    "relatedness_correlation",
    "retrieval",
    "svcca",
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


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _as_float(x: Tensor) -> Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _layer_chunks(n_layers: int, per_layer_bytes: int, budget: int) -> list[slice]:
    size = max(1, min(n_layers, budget // max(1, per_layer_bytes)))
    return [slice(s, min(s + size, n_layers)) for s in range(0, n_layers, size)]


def cosine_gap(x: Features) -> PairValues:
    """Mean cosine of aligned pairs minus mean cosine of non-aligned pairs, per layer and pair.

    The non-aligned mean is over all ``n (n - 1)`` pairs ``(i, j != i)``: the expectation of a
    random pairing, exactly, from the sums of the unit vectors (no item x item matrix).
    """
    u = _unit(_as_float(x))
    n = u.shape[-2]
    if n < 2:
        raise PolylensError("cosine_gap needs at least 2 parallel sentences")
    aligned = torch.einsum("alid,blid->lab", u, u)
    s = u.sum(-2)
    total = torch.einsum("ald,bld->lab", s, s)
    return aligned / n - (total - aligned) / (n * (n - 1))


def retrieval(
    x: Features, *, k: int = 4, budget: int = _DEFAULT_BUDGET
) -> tuple[PairValues, PairValues]:
    """P@1 of retrieving each sentence's translation, by cosine and by ratio margin.

    Args:
        x: parallel features.
        k: neighbours in the margin's denominator (clipped to the number of sentences).
        budget: bytes the item x item matrices of one chunk of layers may take.

    Returns:
        ``(p1_cos, p1_margin)``, each ``[layer, lang, lang]``: entry ``[l, a, b]`` is the share of
        sentences of ``a`` whose nearest sentence in ``b`` is their translation.
    """
    u = _unit(_as_float(x))
    n_lang, n_layer, n, _ = u.shape
    k = max(1, min(k, n))
    target = torch.arange(n, device=u.device)
    p_cos = u.new_empty(n_layer, n_lang, n_lang)
    p_margin = u.new_empty(n_layer, n_lang, n_lang)
    per_layer = 3 * n_lang * n_lang * n * n * u.element_size()
    for chunk in _layer_chunks(n_layer, per_layer, budget):
        sims = torch.einsum("alid,bljd->labij", u[:, chunk], u[:, chunk])
        p_cos[chunk] = (sims.argmax(-1) == target).float().mean(-1)
        # Mean cosine of each query to its k nearest candidates, and of each candidate to its
        # k nearest queries; clamped so that a pathological all-negative neighbourhood stays finite.
        r_query = sims.topk(k, dim=-1).values.mean(-1, keepdim=True)
        r_cand = sims.topk(k, dim=-2).values.mean(-2, keepdim=True)
        margin = sims / ((r_query + r_cand) / 2).clamp_min(1e-6)
        p_margin[chunk] = (margin.argmax(-1) == target).float().mean(-1)
    return p_cos, p_margin


def cka(x: Features) -> PairValues:
    """Linear CKA between every two languages' representations at every layer.

    ``CKA(X, Y) = <K, L>_F / (|K|_F |L|_F)`` with ``K = Xc Xc^T`` and ``L = Yc Yc^T`` the
    item x item Gram matrices of the column-centred features: invariant to rotations and
    isotropic scaling of either side.
    """
    xc = center(_as_float(x))
    gram = xc @ xc.transpose(-1, -2)
    flat = gram.flatten(-2)
    flat = flat / flat.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return torch.einsum("alq,blq->lab", flat, flat)


def svcca(x: Features, *, variance: float = 0.99, budget: int = _DEFAULT_BUDGET) -> PairValues:
    """SVCCA: SVD to the components keeping ``variance`` of the variance, then mean CCA.

    The canonical correlations of two data matrices are the singular values of ``Qa^T Qb``,
    ``Q`` an orthonormal basis of each one's (centred) column space; after the SVD step that
    basis is the kept left singular vectors. Padding the kept sets to a common width with zero
    columns adds only zero singular values, so every pair and layer is one batched symmetric
    eigensolve (in float64: square roots of small eigenvalues amplify rounding).

    Returns:
        ``[layer, lang, lang]``: the mean of the ``min(ka, kb)`` canonical correlations.
    """
    if not 0 < variance <= 1:
        raise PolylensError(f"variance {variance} must be in (0, 1]")
    xc = center(_as_float(x))
    u, s, _ = torch.linalg.svd(xc, full_matrices=False)
    share = s.square().cumsum(-1) / s.square().sum(-1, keepdim=True).clamp_min(1e-30)
    # Components up to and including the first whose cumulative share reaches the target.
    kept = (share < variance - 1e-7).sum(-1) + 1
    kept = torch.minimum(kept, (s > s[..., :1] * 1e-6).sum(-1).clamp_min(1))  # drop null directions
    width = int(kept.max())
    mask = torch.arange(width, device=u.device) < kept[..., None]
    q = u[..., :width] * mask[..., None, :]
    n_lang, n_layer = x.shape[:2]
    out = q.new_empty(n_layer, n_lang, n_lang)
    min_k = torch.minimum(kept[:, None], kept[None, :]).permute(2, 0, 1).to(q.dtype)
    per_layer = 2 * n_lang * n_lang * width * width * q.element_size()
    for chunk in _layer_chunks(n_layer, per_layer, budget):
        cross = torch.einsum("alik,blim->labkm", q[:, chunk], q[:, chunk])
        # Singular values as square roots of the eigenvalues of cross^T cross: LAPACK's SVD
        # converges slowly on these zero-padded products, the symmetric solver does not.
        cross = cross.double()
        sv = torch.linalg.eigvalsh(cross.transpose(-1, -2) @ cross).clamp(0, 1).sqrt()
        mk = min_k[chunk].double()
        out[chunk] = (sv.sum(-1).clamp_max(mk) / mk.clamp_min(1)).to(out.dtype)
    return out


def pair_metrics(
    x: Features, *, k: int = 4, variance: float = 0.99, budget: int = _DEFAULT_BUDGET
) -> dict[str, PairValues]:
    """Every metric of ``METRICS`` for all layers and ordered language pairs of ``x``."""
    p_cos, p_margin = retrieval(x, k=k, budget=budget)
    return {
        "cos_gap": cosine_gap(x),
        "p1_cos": p_cos,
        "p1_margin": p_margin,
        "cka": cka(x),
        "svcca": svcca(x, variance=variance, budget=budget),
    }


def peak_layers(
    values: PairValues, layers: Sequence[int]
) -> tuple[Int[Tensor, "lang lang"], Float[Tensor, "lang lang"]]:
    """The layer (model index) where each pair's metric is highest, and its value there."""
    best, where = values.max(0)
    return torch.as_tensor(list(layers), device=where.device)[where], best


@dataclass(frozen=True)
class PairGroups:
    """Which ordered pairs ``(a, b)``, ``a != b``, share a script, a family or a branch."""

    langs: list[str]
    off_diagonal: Tensor
    same_script: Tensor
    same_family: Tensor
    """Same top-level family (``Indo-European``), whatever the branch."""
    same_branch: Tensor
    """Same family and branch (``Indo-European (Romance)``)."""

    def relations(self) -> dict[str, Tensor]:
        """The relatedness indicators by name (``[lang, lang]`` booleans)."""
        return {
            "same_script": self.same_script,
            "same_family": self.same_family,
            "same_branch": self.same_branch,
        }


def pair_groups(langs: Sequence[str]) -> PairGroups:
    """Relatedness of every two languages from ``interp.data.languages``."""
    unknown = [code for code in langs if code not in LANGUAGES]
    if unknown:
        raise PolylensError(f"no script or family known for language {unknown[0]!r}")
    meta = [LANGUAGES[code] for code in langs]

    def same(key) -> Tensor:
        return torch.tensor([[key(a) == key(b) for b in meta] for a in meta])

    off = ~torch.eye(len(langs), dtype=torch.bool)
    return PairGroups(
        list(langs),
        off,
        same(lambda m: m.script) & off,
        same(lambda m: m.family.split(" (")[0]) & off,
        same(lambda m: m.family) & off,
    )


def group_curves(
    values: PairValues, groups: PairGroups
) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """Per layer, the mean and interquartile range over the ordered pairs of each pair group.

    Groups (pairs of two distinct languages): ``same script``, ``different script``, ``same
    family`` and ``different family``; a group with no pair is left out.
    """
    out = {}
    for name, mask in (
        ("same script", groups.same_script),
        ("different script", groups.off_diagonal & ~groups.same_script),
        ("same family", groups.same_family),
        ("different family", groups.off_diagonal & ~groups.same_family),
    ):
        if mask.any():
            pairs = values[:, mask.to(values.device)].float().cpu()
            q = pairs.quantile(torch.tensor([0.25, 0.75]), dim=1)
            out[name] = (pairs.mean(1), q[0], q[1])
    return out


def relatedness_correlation(
    values: PairValues, groups: PairGroups
) -> dict[str, Float[Tensor, " layer"]]:
    """Pearson correlation, per layer, of a metric with each relatedness indicator.

    Over unordered pairs ``a < b``, the metric symmetrised as the mean of ``(a, b)`` and
    ``(b, a)``; NaN where an indicator is constant (e.g. no two languages share a script).
    """
    n = len(groups.langs)
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
    sym = ((values + values.transpose(1, 2)) / 2)[:, upper]
    out = {}
    for name, related in groups.relations().items():
        ind = related[upper].to(sym.device, sym.dtype)
        a = sym - sym.mean(-1, keepdim=True)
        b = ind - ind.mean()
        denom = a.norm(dim=-1) * b.norm()
        out[name] = torch.where(denom > 0, (a @ b) / denom, torch.nan)
    return out


def _bos_ids(model: LoadedModel) -> set[int]:
    return set(model.tokenizer.all_special_ids)


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

    Args:
        model: the model.
        sentences: ``{lang: sentences}``, the same number of sentences per language.
        pooling: ``last`` (the last token) or ``mean`` (over the sentence's tokens, a leading
            special token such as BOS left out: its residual is the same for every prompt and,
            in models with attention sinks, orders of magnitude larger than the others, so it
            would swamp the mean).
        batch_size: prompts per forward pass.
        store: activation store (a second run reads its features back).
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
    acts = extract(model, prompts, positions=pooling, **options).tensor
    if pooling == "mean":
        ids = model.tokenize(prompts)
        firsts = {row[0] for row in ids}
        if len(firsts) == 1 and firsts <= _bos_ids(model):
            lengths = torch.tensor([len(row) for row in ids], dtype=acts.dtype)
            if int(lengths.min()) < 2:
                raise PolylensError("a sentence tokenizes to its special token alone")
            # Position 0 sees only itself: one prompt gives every prompt's first residual.
            first = extract(model, prompts[:1], positions=0, **options).tensor
            lengths = lengths[:, None, None]
            acts = (acts * lengths - first) / (lengths - 1)
    return acts.reshape(len(langs), -1, *acts.shape[1:]).transpose(1, 2)
