"""Unit tier: linear probes against scikit-learn and known cases."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from interp import PolylensError
from probes.align import METHODS, fit_alignment, transfer_matrix
from probes.artifact import load_probe, save_probe
from probes.evaluate import (
    accuracy,
    auroc,
    balanced_accuracy,
    cross_validate,
    expected_calibration_error,
    stratified_folds,
)
from probes.linear import fit_logistic, fit_mass_mean


def synthetic(n_layers=3, n=240, d=12, seed=0):
    """Layer l separates the classes along a random direction with margin growing with l."""
    gen = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=gen) < 0.4).long()
    x = torch.randn(n_layers, n, d, generator=gen)
    direction = torch.randn(d, generator=gen)
    for layer in range(n_layers):
        x[layer] += (layer + 0.5) * 0.6 * (y[:, None] * 2 - 1) * direction / direction.norm()
    return x * 3 + 1, y


def test_logistic_matches_sklearn():
    x, y = synthetic()
    probe = fit_logistic(x, y, C=0.5)
    for layer in range(x.shape[0]):
        z = ((x[layer] - probe.mean[layer]) / probe.std[layer]).numpy()
        ref = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(z, y.numpy())
        np.testing.assert_allclose(probe.weight[layer].numpy(), ref.coef_[0], atol=1e-4)
        assert probe.bias[layer].item() == pytest.approx(ref.intercept_[0], abs=1e-4)
        ours = (probe.predict_proba(x)[layer] >= 0.5).numpy()
        assert (ours == ref.predict(z).astype(bool)).mean() == 1.0


def test_metrics_match_definitions():
    x, y = synthetic()
    prob = fit_logistic(x, y).predict_proba(x)
    for layer in range(3):
        assert auroc(prob, y)[layer].item() == pytest.approx(
            roc_auc_score(y.numpy(), prob[layer].numpy()), abs=1e-6
        )
        assert balanced_accuracy(prob, y)[layer].item() == pytest.approx(
            balanced_accuracy_score(y.numpy(), prob[layer].numpy() >= 0.5), abs=1e-6
        )
    unbalanced = torch.tensor([1, 0, 0, 0, 0, 0, 0, 0])
    constant = torch.zeros(1, 8)
    assert accuracy(constant, unbalanced).item() == 0.875
    assert balanced_accuracy(constant, unbalanced).item() == 0.5
    tied = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    assert auroc(tied, torch.tensor([0, 1, 0, 1])).item() == pytest.approx(0.5)
    perfect = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1, 0, 1])
    assert accuracy(perfect, labels).item() == 1.0
    assert expected_calibration_error(perfect, labels).item() == 0.0
    assert expected_calibration_error(torch.full((1, 4), 0.9), labels).item() == pytest.approx(0.4)


def test_mass_mean_separates_and_cv_improves_with_margin():
    x, y = synthetic(n_layers=4)
    assert accuracy(fit_mass_mean(x, y).predict_proba(x), y)[-1] > 0.9
    scores = cross_validate(x, y, k=5, seed=0)
    assert scores["accuracy"].shape == (5, 4)
    mean_acc = scores["accuracy"].mean(0)
    assert mean_acc[-1] > mean_acc[0] and mean_acc[-1] > 0.9
    again = cross_validate(x, y, k=5, seed=0)
    assert torch.equal(again["auroc"], scores["auroc"])


def test_folds_are_stratified_and_disjoint():
    _, y = synthetic()
    folds = stratified_folds(y, 5, seed=1)
    everything = torch.cat(folds)
    assert sorted(everything.tolist()) == list(range(len(y)))
    shares = [y[f].float().mean().item() for f in folds]
    assert max(shares) - min(shares) < 0.05


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (torch.randn(2, 6, 3), torch.zeros(6), "both classes"),
        (torch.full((2, 6, 3), float("nan")), torch.tensor([0, 1] * 3), "NaN"),
        (torch.randn(6, 3), torch.tensor([0, 1] * 3), r"\[layer, n, d\]"),
    ],
)
def test_bad_inputs(x, y, message):
    with pytest.raises(PolylensError, match=message):
        fit_logistic(x, y)


def test_large_half_precision_features_are_not_mistaken_for_inf():
    x, y = synthetic(n_layers=1, n=40, d=4)
    big = (x * 3e3).half()
    assert torch.isfinite(big).all() and not torch.isfinite(big.sum())  # float16 overflows
    probe = fit_mass_mean(big, y)
    assert torch.isfinite(probe.weight).all()


def test_too_few_items_for_folds():
    with pytest.raises(PolylensError, match="fewer than the 5 folds"):
        cross_validate(torch.randn(1, 8, 3), torch.tensor([0] * 6 + [1] * 2), k=5)


def test_constant_features_do_not_produce_nan():
    x, y = synthetic()
    x[:, :, 0] = 7.0
    probe = fit_logistic(x, y)
    assert torch.isfinite(probe.weight).all() and torch.isfinite(probe.predict_proba(x)).all()


def test_alignments_recover_a_known_map():
    gen = torch.Generator().manual_seed(0)
    layers, n, d = 2, 300, 8
    a = torch.randn(layers, n, d, generator=gen)
    rotation = torch.linalg.qr(torch.randn(layers, d, d, generator=gen))[0]
    shift = torch.randn(layers, d, generator=gen) * 3
    b = torch.bmm(a, rotation) + shift[:, None]  # B = A R + s, so A = (B - s) R^T
    train, test = slice(0, 200), slice(200, None)
    err = {}
    for method in METHODS:
        align = fit_alignment(method, b[:, train], a[:, train])
        err[method] = (align(b[:, test]) - a[:, test]).abs().max().item()
    # Only the centred projection can express rotation + shift; the plain projection has no
    # intercept, the mean shift no rotation.
    assert err["centred_projection"] < 1e-3
    assert min(err["projection"], err["mean_shift"], err["identical"]) > 0.5
    linear_only = fit_alignment("projection", torch.bmm(a[:, train], rotation), a[:, train])
    recovered = linear_only(torch.bmm(a[:, test], rotation))
    torch.testing.assert_close(recovered, a[:, test], atol=1e-3, rtol=0)
    shifted = fit_alignment("mean_shift", a[:, train] + 5.0, a[:, train])
    torch.testing.assert_close(shifted(a[:, test] + 5.0), a[:, test], atol=1e-5, rtol=0)
    with pytest.raises(PolylensError, match="unknown alignment"):
        fit_alignment("procrustes++", b, a)


def test_transfer_matrix_diagonal_and_shifted_language():
    x, y = synthetic(n_layers=4)
    x = x[2:]  # the layers with a clear margin
    data = {"en": (x, y), "xx": (x + 10.0, y)}  # same task, a language offset
    langs, matrix = transfer_matrix(data, fit_logistic, accuracy)
    assert langs == ["en", "xx"] and matrix.shape == (2, 2, 2)
    assert (matrix[:, 0, 0] > 0.8).all() and (matrix[:, 1, 1] > 0.8).all()
    assert (matrix[:, 0, 1] < matrix[:, 0, 0]).all()  # the offset breaks transfer ...
    align = fit_alignment("mean_shift", x + 10.0, x)  # ... and a mean shift repairs it
    repaired = accuracy(fit_logistic(x, y).predict_proba(align(x + 10.0)), y)
    torch.testing.assert_close(repaired, matrix[:, 0, 0])


def test_probe_artifact_round_trip(tmp_path):
    from tiny import tiny_model

    x, y = synthetic()
    probe = fit_logistic(x, y)
    llama = tiny_model("llama")
    path = save_probe(probe, tmp_path / "probe", {"model": llama.identity, "layers": [0, 1, 2]})
    back, info = load_probe(path, llama)
    torch.testing.assert_close(back.predict_proba(x), probe.predict_proba(x))
    assert info["layers"] == [0, 1, 2] and "polylens_version" in info
    with pytest.raises(PolylensError, match="was fitted on"):
        load_probe(path, tiny_model("llama", seed=3))
    with pytest.raises(PolylensError, match="no probe 'missing' in"):
        load_probe(tmp_path / "missing")


def test_a_dot_in_a_probe_name_is_part_of_the_name(tmp_path):
    x, y = synthetic()
    weak, strong = fit_logistic(x, y, C=0.1), fit_logistic(x, y, C=0.5)
    first = save_probe(weak, tmp_path / "probe_C0.1", {"C": 0.1})
    second = save_probe(strong, tmp_path / "probe_C0.5", {"C": 0.5})
    assert first.name == "probe_C0.1.safetensors" and second.name == "probe_C0.5.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "probe_C0.1.json",
        "probe_C0.1.safetensors",
        "probe_C0.5.json",
        "probe_C0.5.safetensors",
    ]
    # Each name reads back its own probe, by its name or by either of its files.
    for name, probe, c in (("probe_C0.1", weak, 0.1), ("probe_C0.5", strong, 0.5)):
        for path in (tmp_path / name, tmp_path / f"{name}.safetensors", tmp_path / f"{name}.json"):
            back, info = load_probe(path)
            assert info["C"] == c
            torch.testing.assert_close(back.weight, probe.weight)
    assert not torch.allclose(weak.weight, strong.weight)


def test_knowledge_labels(monkeypatch):
    from tiny import tiny_model

    from interp.data import load
    from probes import labels as labels_module

    records = [
        r
        for r in load("boundary", langs=["fr"])
        if r.id in ("real:capital:FR", "real:capital:JP", "future_event:election:2050")
    ]
    assert labels_module.knowledge_labels(None, records).tolist() == [1, 1, 0]
    seen = []

    class Answers:  # a model whose generation is scripted
        def generate(self, prompts, **kw):
            seen.extend(prompts)
            return [" Paris, bien sûr", " Pékin\nLa capitale du pays Japon est Tokyo"][
                : len(prompts)
            ]

    by_model = labels_module.knowledge_labels(Answers(), records, scheme="model")
    assert by_model.tolist() == [1, 0, 0]  # Tokyo only on a later line: wrong
    lines = seen[0].split("\n")
    assert len(lines) == 4 and lines[-1] == "La capitale du pays France est"
    assert all(line.startswith("La capitale du pays ") for line in lines)
    assert "France" not in seen[0].removesuffix(lines[-1])  # never its own answer as a demo
    with pytest.raises(PolylensError, match="unknown label scheme"):
        labels_module.knowledge_labels(None, records, scheme="vibes")
    monkeypatch.undo()
    llama = tiny_model("llama")
    texts = llama.generate(["La capitale", "x"], max_new_tokens=3, stop="\n")
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert labels_module.is_correct(" der Euro.", ["Euro", "EUR"])
    facts = load("facts", langs=["en", "zh"])
    en, zh = (next(f for f in facts if f.id == "capital:FR" and f.lang == g) for g in ("en", "zh"))
    en_demos = labels_module.few_shot_cloze(en, facts).split("\n")[:-1]
    zh_demos = labels_module.few_shot_cloze(zh, facts).split("\n")[:-1]
    assert all(" " in d for d in en_demos) and not any(" " in d for d in zh_demos)
    by_id = {(f.lang, f.cloze): f.id for f in facts}
    same = [by_id[("en", d.rsplit(" ", 1)[0])] for d in en_demos]
    assert same == [
        next(i for (g, c), i in by_id.items() if g == "zh" and d.startswith(c)) for d in zh_demos
    ]
    assert not labels_module.is_correct(" Dollar", ["Euro", "EUR"])


@pytest.mark.parametrize("float32_fails", [False, True])
def test_dual_newton_equals_primal_and_sklearn_when_n_below_d(monkeypatch, float32_fails):
    from probes.linear import _newton_dual, _newton_primal, _standardise

    if float32_fails:  # a badly conditioned layer: float64 must take over from the first step
        cholesky_ex = torch.linalg.cholesky_ex

        def failing_in_float32(a):
            chol, info = cholesky_ex(a)
            return chol, info + (a.dtype == torch.float32)

        monkeypatch.setattr(torch.linalg, "cholesky_ex", failing_in_float32)
    x, y = synthetic(n_layers=2, n=60, d=100)
    z, _, _ = _standardise(x)
    target = y.double().expand(2, -1)
    for lam in (2.0, 1e-3):
        dual = _newton_dual(z, target, lam, max_iter=100, tol=1e-8)
        primal = _newton_primal(z, target, lam, max_iter=100, tol=1e-8)
        for a, b in zip(dual, primal, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5 / lam, rtol=1e-5)

    probe = fit_logistic(x, y, C=0.5)
    for layer in range(2):
        feats = ((x[layer] - probe.mean[layer]) / probe.std[layer]).numpy()
        ref = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(feats, y.numpy())
        np.testing.assert_allclose(probe.weight[layer].numpy(), ref.coef_[0], atol=1e-4)
        assert probe.bias[layer].item() == pytest.approx(ref.intercept_[0], abs=1e-4)


def test_one_label_row_per_problem_equals_separate_fits():
    x, y = synthetic(n_layers=1, n=80, d=120)
    flipped = y.clone()
    flipped[:20] = 1 - flipped[:20]
    stacked = torch.cat([x, x])
    labels = torch.stack([y, flipped])
    for fit in (fit_logistic, fit_mass_mean):
        both = fit(stacked, labels)
        for row, target in enumerate((y, flipped)):
            alone = fit(x, target)
            torch.testing.assert_close(both.weight[row], alone.weight[0], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(both.bias[row], alone.bias[0], atol=1e-5, rtol=1e-4)
    with pytest.raises(PolylensError, match="both classes"):
        fit_logistic(stacked, torch.stack([y, torch.zeros_like(y)]))


def test_spd_solves_survive_set_num_threads():
    from probes.linear import solve_spd

    # Batched LU in this torch's MKL fails ("Pivots given to lu_solve ...") once
    # torch.set_num_threads has been called, even with the current count; Cholesky does not.
    torch.set_num_threads(torch.get_num_threads())
    gen = torch.Generator().manual_seed(0)
    src = torch.randn(3, 200, 300, generator=gen)
    dst = src @ torch.randn(3, 300, 300, generator=gen) * 0.1
    align = fit_alignment("projection", src, dst)
    assert torch.isfinite(align.weight).all()
    a = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)  # indefinite: LU fallback
    b = torch.tensor([[[2.0], [3.0]]], dtype=torch.float64)
    torch.testing.assert_close(solve_spd(a, b), torch.tensor([[[3.0], [2.0]]], dtype=torch.float64))


@pytest.mark.parametrize("seed", [0, 1])
def test_layer_with_few_distinct_rows_matches_sklearn(seed):
    # Like the embedding layer at a question's last token: a handful of distinct vectors with
    # large offsets. Float32 steps drift and stall there; float64 must finish the job.
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randn(8, 300, generator=gen) * 50 + 100
    which = torch.randint(0, 8, (120,), generator=gen)
    y = ((which < 3) ^ (torch.rand(120, generator=gen) < 0.1)).long()
    x = tokens[which][None]
    probe = fit_logistic(x, y)
    z = ((x[0].double() - probe.mean[0].double()) / probe.std[0].double()).numpy()
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=100_000).fit(z, y.numpy())
    np.testing.assert_allclose(probe.weight[0].numpy(), ref.coef_[0], atol=1e-4)
    assert probe.bias[0].item() == pytest.approx(ref.intercept_[0], abs=1e-4)


def test_probe_curves_find_the_layer_that_separates_and_skip_thin_languages():
    from probes.curves import curve_peaks, known_rates, probe_curves

    g = torch.Generator().manual_seed(0)
    n, d = 60, 6
    y = (torch.arange(n) % 2).float()
    x = torch.randn(3, n, d, generator=g)
    x[2, :, 0] += 4.0 * (2 * y - 1)  # only layer 2 carries the label
    thin = torch.zeros(n)
    thin[:2] = 1.0  # 2 items in the smaller class: fewer than 5 folds
    groups = ["capital" if i < n // 2 else "currency" for i in range(n)]
    out = probe_curves(
        {"en": (x, y), "sw": (x, thin)},
        groups,
        items="all",
        labels="model",
        folds=5,
        seed=0,
        C=1.0,
        with_control=True,
        control_shuffles=2,
    )
    assert out.skipped == [
        "sw (all questions): 2 items in the smaller class under 'model' labels, fewer than 5 "
        "folds; skipped"
    ]
    mean, _ = out.curves["en"]
    assert mean[2] > 0.95 and mean[0] < 0.8 and mean[1] < 0.8
    assert curve_peaks(out.curves, n_blocks=2) == {
        "en": {"peak_layer": 2, "relative_depth": 1.0, "peak_auroc": float(mean[2])}
    }
    assert out.control["en"]["selectivity"][2] > 0.3  # the control cannot read the label
    assert {r["probe"] for r in out.rows} == {"logistic", "logistic_control", "mass_mean"}
    assert len(out.rows) == 3 * 3  # three probes x three layers, en only
    rates = known_rates({"en": (x, y)}, groups)
    assert rates == {"capital": 0.5, "currency": 0.5}
