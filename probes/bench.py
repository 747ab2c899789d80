"""``polylens bench probes``: batched probes against scikit-learn on the same features."""

from __future__ import annotations

import numpy as np
import torch

from interp.bench import bench_model
from interp.data import DEFAULT_LANGS
from interp.model.models import LoadedModel
from interp.storage.store import ActivationStore
from interp.timing import interleaved
from probes.boundary import balanced_items, boundary_features
from probes.evaluate import cross_validate, stratified_folds


def _sklearn_accuracy(x: np.ndarray, y: np.ndarray, test: np.ndarray, layer: int) -> float:
    """Test accuracy of scikit-learn's L2 logistic regression (C = 1) on one layer and fold.

    Standardised with the training rows' mean and (unbiased) std, as ``cross_validate`` does.
    """
    from sklearn.linear_model import LogisticRegression

    train = np.ones(len(y), dtype=bool)
    train[test] = False
    xtr, xte = x[layer, train].astype(np.float64), x[layer, test].astype(np.float64)
    mean, std = xtr.mean(0), np.maximum(xtr.std(0, ddof=1), 1e-6)
    clf = LogisticRegression(C=1.0, max_iter=1000).fit((xtr - mean) / std, y[train])
    return float(clf.score((xte - mean) / std, y[test]))


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
    and fold (one process per core, each with a single-threaded BLAS), polylens
    fits all layers of a fold in one batched solve. Medians of ``repeats`` interleaved runs.
    """
    # scikit-learn (and joblib) are test/bench dependencies only.
    from joblib import Parallel, delayed

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

    arrays = {lang: (x.cpu().numpy(), y.cpu().numpy()) for lang, (x, y) in data.items()}
    test_folds = {
        lang: [t.numpy() for t in stratified_folds(y, folds, seed=0)]
        for lang, (_, y) in data.items()
    }
    n_layers = model.n_layers

    def sklearn() -> None:
        # Every (language, fold, layer) fit is its own job on a pool of processes, each with one
        # BLAS thread: a 160 x 640 problem is too small for a threaded BLAS, whose threads then
        # fight torch's (12x slower per fit on 2 cores), and lbfgs holds the GIL between BLAS
        # calls, so threads barely overlap. joblib memory-maps each language's features once.
        jobs = [
            delayed(_sklearn_accuracy)(*arrays[lang], test, layer)
            for lang in arrays
            for test in test_folds[lang]
            for layer in range(n_layers)
        ]
        accs = torch.tensor(Parallel(n_jobs=-1)(jobs)).view(len(arrays), folds, n_layers)
        for lang, acc in zip(arrays, accs):
            theirs[lang] = acc.mean(0)

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
