"""``polylens bench probes``: batched probes against scikit-learn on the same features."""

from __future__ import annotations

import torch

from interp.bench import interleaved
from interp.data import DEFAULT_LANGS
from interp.models import load_model
from interp.store import ActivationStore
from probes.boundary import balanced_items, boundary_features
from probes.evaluate import cross_validate, stratified_folds


def bench_probes(
    spec: str = "gemma-3-270m",
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
    regression (C = 1) on the same standardised training folds; scikit-learn loops over layers
    and folds, polylens fits all layers of a fold in one batched solve. Medians of ``repeats``
    interleaved runs.
    """
    # scikit-learn is a test/bench dependency only.
    from sklearn.linear_model import LogisticRegression

    langs = list(langs or DEFAULT_LANGS)
    model = load_model(spec, device=device)
    data = boundary_features(
        model, langs, balanced_items(n_per_class, seed=0), store=ActivationStore()
    ).features

    ours: dict[str, torch.Tensor] = {}
    theirs: dict[str, torch.Tensor] = {}

    def polylens() -> None:
        for lang, (x, y) in data.items():
            scores = cross_validate(x.to(model.device), y, k=folds, seed=0)
            ours[lang] = scores["accuracy"].mean(0)

    def sklearn() -> None:
        for lang, (x, y) in data.items():
            per_fold = []
            for test in stratified_folds(y, folds, seed=0):
                train = torch.ones(len(y), dtype=torch.bool)
                train[test] = False
                accs = []
                for layer in range(x.shape[0]):
                    xtr, xte = x[layer, train].double(), x[layer, test].double()
                    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
                    clf = LogisticRegression(C=1.0, max_iter=1000)
                    clf.fit(((xtr - mean) / std).numpy(), y[train].numpy())
                    accs.append(clf.score(((xte - mean) / std).numpy(), y[test].numpy()))
                per_fold.append(accs)
            theirs[lang] = torch.tensor(per_fold).mean(0)

    timings = interleaved(
        {"polylens": polylens, "sklearn": sklearn},
        repeats,
        cuda=model.device.type == "cuda",
    )
    median = timings.median
    diff = max(float((ours[lang] - theirs[lang]).abs().max()) for lang in data)
    return {
        "model": spec,
        "device": str(model.device),
        "languages": langs,
        "n_per_language": 2 * n_per_class,
        "layers": model.n_layers,
        "folds": folds,
        "repeats": repeats,
        "median_s": median,
        "all_s": timings.times,
        "speedup": median["sklearn"] / median["polylens"],
        "max_accuracy_difference_points": 100 * diff,
    }
