"""Per-pair, per-layer reference implementations of ``similarity``'s metrics (numpy).

Written the way reference code computes them, one layer and one language pair at a time, in
float64 and by other routes (CKA from the feature cross-covariance, CCA from whitened
covariances), so that the tests and ``polylens bench similarity`` check the batched metrics
against an independent implementation.
"""

from __future__ import annotations

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cosine_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Aligned minus non-aligned mean cosine of two ``[item, d]`` sets."""
    sims = _unit(a) @ _unit(b).T
    n = len(sims)
    off = ~np.eye(n, dtype=bool)
    return float(np.diag(sims).mean() - sims[off].mean())


def retrieval(a: np.ndarray, b: np.ndarray, k: int) -> tuple[float, float]:
    """P@1 of a -> b by cosine and by ratio margin over ``k`` neighbours."""
    sims = _unit(a) @ _unit(b).T
    n = len(sims)
    k = max(1, min(k, n))
    p_cos = float(np.mean(sims.argmax(1) == np.arange(n)))
    r_a = np.sort(sims, axis=1)[:, ::-1][:, :k].mean(1)
    r_b = np.sort(sims, axis=0)[::-1][:k].mean(0)
    margin = sims / np.maximum((r_a[:, None] + r_b[None, :]) / 2, 1e-6)
    return p_cos, float(np.mean(margin.argmax(1) == np.arange(n)))


def cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear CKA from the feature cross-covariance: ``|Yc^T Xc|^2 / (|Xc^T Xc| |Yc^T Yc|)``."""
    a, b = a - a.mean(0), b - b.mean(0)
    num = np.linalg.norm(b.T @ a) ** 2
    return float(num / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)))


def _svd_reduce(x: np.ndarray, variance: float, max_components: int | None) -> np.ndarray:
    x = x - x.mean(0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    share = np.cumsum(s**2) / np.sum(s**2)
    keep = int(np.sum(share < variance - 1e-7)) + 1
    keep = min(keep, max(1, int(np.sum(s > s[0] * 1e-6))))
    if max_components is not None:
        keep = min(keep, max_components)
    return u[:, :keep] * s[:keep]


def svcca(a: np.ndarray, b: np.ndarray, variance: float, max_components: int | None = 20) -> float:
    """SVD to ``variance`` (at most ``max_components``), then CCA by whitening.

    Returns the mean singular value of the whitened cross-covariance.
    """
    ra = _svd_reduce(a, variance, max_components)
    rb = _svd_reduce(b, variance, max_components)

    def inv_sqrt(c: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(c)
        return v @ np.diag(1 / np.sqrt(w)) @ v.T

    n = len(ra)
    caa, cbb, cab = ra.T @ ra / n, rb.T @ rb / n, ra.T @ rb / n
    rho = np.linalg.svd(inv_sqrt(caa) @ cab @ inv_sqrt(cbb), compute_uv=False)
    return float(np.clip(rho, 0, 1)[: min(ra.shape[1], rb.shape[1])].mean())


def pair_metrics(
    x: np.ndarray, *, k: int = 4, variance: float = 0.99, max_components: int | None = 20
) -> dict[str, np.ndarray]:
    """Every metric for ``x [lang, layer, item, d]``, looping over layers and ordered pairs."""
    n_lang, n_layer = x.shape[:2]
    x = x.astype(np.float64)
    out = {m: np.zeros((n_layer, n_lang, n_lang)) for m in METRICS}
    for layer in range(n_layer):
        for a in range(n_lang):
            for b in range(n_lang):
                xa, xb = x[a, layer], x[b, layer]
                out["cos_gap"][layer, a, b] = cosine_gap(xa, xb)
                p_cos, p_margin = retrieval(xa, xb, k)
                out["p1_cos"][layer, a, b] = p_cos
                out["p1_margin"][layer, a, b] = p_margin
                out["cka"][layer, a, b] = cka(xa, xb)
                out["svcca"][layer, a, b] = svcca(xa, xb, variance, max_components)
    return out


def unordered_pair_metrics(
    x: np.ndarray, *, k: int = 4, variance: float = 0.99, max_components: int | None = 20
) -> dict[str, np.ndarray]:
    """The same, as a reference loop would: each unordered pair once, retrieval both ways.

    Entries ``[l, a, b]`` with ``a < b`` hold the symmetric metrics and retrieval a -> b,
    ``[l, b, a]`` retrieval b -> a; the diagonal is left at zero.
    """
    n_lang, n_layer = x.shape[:2]
    out = {m: np.zeros((n_layer, n_lang, n_lang)) for m in METRICS}
    for layer in range(n_layer):
        for a in range(n_lang):
            for b in range(a + 1, n_lang):
                xa, xb = x[a, layer].astype(np.float64), x[b, layer].astype(np.float64)
                for name, value in (
                    ("cos_gap", cosine_gap(xa, xb)),
                    ("cka", cka(xa, xb)),
                    ("svcca", svcca(xa, xb, variance, max_components)),
                ):
                    out[name][layer, a, b] = out[name][layer, b, a] = value
                for (qa, qb), (i, j) in (((xa, xb), (a, b)), ((xb, xa), (b, a))):
                    p_cos, p_margin = retrieval(qa, qb, k)
                    out["p1_cos"][layer, i, j], out["p1_margin"][layer, i, j] = p_cos, p_margin
    return out


METRICS = ("cos_gap", "p1_cos", "p1_margin", "cka", "svcca")
