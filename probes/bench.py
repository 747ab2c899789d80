"""``polylens bench probes``: batched probes against scikit-learn on the same features."""

from __future__ import annotations

import torch

from interp.bench import bench_model, interleaved
from interp.data import DEFAULT_LANGS
from interp.models import LoadedModel
from interp.store import ActivationStore
from probes.boundary import balanced_items, boundary_features
from probes.evaluate import cross_validate, stratified_folds


def bench_probes(
    spec: LoadedModel | str = "gemma-3-270m",
    *,
    n_per_class: int = 100,
    folds: int = 5,
    langs: tuple[str, ...] | None = None,
    device: str | None = None,
    repeats: int = 3,
) -> dict:
    """Batched polylens probes vs scikit-learn per layer and fold, on the same features.

    Features: the ``knowledge-boundary`` defaults (last question token, every layer, the
    language set), read from the activation store when cached. Both sides fit L2 logistic
    regression (C = 1) on the same standardised training folds; scikit-learn fits each layer
    and fold (single-threaded BLAS, the layers of a fold in parallel on every core), polylens
    fits all layers of a fold in one batched solve. Medians of ``repeats`` interleaved runs.
    """
    # scikit-learn (with joblib and threadpoolctl) is a test/bench dependency only.
    from joblib import Parallel, delayed
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    langs = list(langs or DEFAULT_LANGS)
    model = bench_model(spec, device)
    data = boundary_features(
        model, langs, balanced_items(n_per_class, seed=0), store=ActivationStore()
    ).features

    ours: dict[str, torch.Tensor] = {}
    theirs: dict[str, torch.Tensor] = {}

    def polylens() -> None:
        for lang, (x, y) in data.items():
            scores = cross_validate(x.to(model.device), y, k=folds, seed=0)
            ours[lang] = scores["accuracy"].mean(0).cpu()

    def fit_and_score(xtr, ytr, xte, yte) -> float:
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(xtr, ytr)
        return clf.score(xte, yte)

    def sklearn() -> None:
        # One BLAS thread per fit and the layers' fits side by side: a 160 x 640 problem is
        # too small for a threaded BLAS, whose threads then fight torch's (measured: 12x slower
        # per fit on 2 cores, and no end in sight on 16).
        with threadpool_limits(limits=1), Parallel(n_jobs=-1, prefer="threads") as pool:
            for lang, (x, y) in data.items():
                x, y = x.cpu(), y.cpu()
                per_fold = []
                for test in stratified_folds(y, folds, seed=0):
                    train = torch.ones(len(y), dtype=torch.bool)
                    train[test] = False
                    jobs = []
                    for layer in range(x.shape[0]):
                        xtr, xte = x[layer, train].double(), x[layer, test].double()
                        mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
                        jobs.append(
                            delayed(fit_and_score)(
                                ((xtr - mean) / std).numpy(),
                                y[train].numpy(),
                                ((xte - mean) / std).numpy(),
                                y[test].numpy(),
                            )
                        )
                    per_fold.append(pool(jobs))
                theirs[lang] = torch.tensor(per_fold).mean(0)

    timings = interleaved(
        {"polylens": polylens, "sklearn": sklearn},
        repeats,
        cuda=model.device.type == "cuda",
    )
    median = timings.median
    diff = max(float((ours[lang] - theirs[lang]).abs().max()) for lang in data)
    return {
        "model": model.name,
        "device": str(model.device),
        "languages": langs,
        "n_per_language": 2 * n_per_class,
        "layers": model.n_layers,
        "folds": folds,
        "repeats": repeats,
        "median_s": median,
        "all_s": timings.times,
        "speedup": median["sklearn"] / median["polylens"],
        "cuda_peak_mb": {k: round(v / 2**20, 1) for k, v in timings.cuda_peak.items()},
        "max_accuracy_difference_points": 100 * diff,
    }
