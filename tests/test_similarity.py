"""Unit tier: similarity metrics against known cases and a per-pair numpy loop; parallel files."""

import numpy as np
import pytest
import torch

from interp import PolylensError
from interp.analysis import language_pairs as pairs
from interp.analysis import similarity as sim
from interp.analysis import similarity_reference as ref
from interp.data.user import read_parallel_dir


def _stack(*sets: torch.Tensor) -> torch.Tensor:
    """``[lang, layer=1, item, d]`` from ``[item, d]`` sets."""
    return torch.stack(sets)[:, None]


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


def test_cka_of_itself_rotation_and_scaling_is_one():
    x = torch.randn(40, 12, dtype=torch.float64)
    other = torch.randn(40, 12, dtype=torch.float64)
    values = sim.cka(_stack(x, x @ _orthogonal(12, 1), 3.7 * x, other))[0]
    assert torch.allclose(values[0, :3], torch.ones(3, dtype=torch.float64), atol=1e-10)
    assert values[0, 3] < 0.9
    assert torch.allclose(values, values.T)


def test_svcca_of_an_invertible_linear_map_is_one():
    x = torch.randn(200, 8, dtype=torch.float64)
    # Well conditioned, so that every component keeps well over 1% of the variance.
    a = _orthogonal(8, 2) @ torch.diag(torch.linspace(1, 2, 8, dtype=torch.float64))
    other = torch.randn(200, 8, dtype=torch.float64)
    values = sim.svcca(_stack(x, x @ a, other), variance=0.99)[0]
    assert values[0, 1] == pytest.approx(1, abs=1e-8)
    assert values[0, 0] == pytest.approx(1, abs=1e-8)
    assert values[0, 2] < 0.5


def test_svcca_cap_separates_unrelated_data_and_keeps_linear_maps_at_one():
    # As in the experiment: 152 sentences, 640-d features. Unrelated random data: without a cap
    # the 99% rule keeps nearly all 151 centred directions and CCA of two such subspaces of the
    # 151-d sample space is ~1 whatever the data; with the cap it is well below 1.
    g = torch.Generator().manual_seed(0)
    x, other = torch.randn(2, 152, 640, generator=g, dtype=torch.float64)
    uncapped = sim.svcca(_stack(x, other), max_components=None)[0, 0, 1]
    capped = sim.svcca(_stack(x, other), max_components=20)[0, 0, 1]
    assert uncapped > 0.95
    assert capped < 0.5
    # Any invertible map of data with fewer directions than the cap: the same column space, 1.
    low_rank = torch.randn(152, 10, generator=g, dtype=torch.float64) @ torch.randn(
        10, 640, generator=g, dtype=torch.float64
    )
    mixed = low_rank @ torch.randn(640, 640, generator=g, dtype=torch.float64)
    value = sim.svcca(_stack(low_rank, mixed), max_components=20)[0, 0, 1]
    assert value == pytest.approx(1, abs=1e-6)
    with pytest.raises(PolylensError, match="max_components 0"):
        sim.svcca(_stack(x, other), max_components=0)


def test_svcca_cap_keeps_the_top_directions_a_known_case():
    # Twelve centred orthonormal sample-space directions q0..q11 (60 sentences). x spans q0..q9 with
    # singular values 10, 9, ..., 1; y spans q0 q1 q2 q10 q11 q3 q4 ... q7 with the same values,
    # so y's top five directions share three with x's top five: canonical correlations 1, 1, 1,
    # 0, 0. Capped at k, SVCCA is the share of shared directions among the top k of each side.
    g = torch.Generator().manual_seed(5)
    raw = torch.randn(60, 12, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(raw - raw.mean(0))
    values = torch.arange(10, 0, -1, dtype=torch.float64)
    rows = torch.linalg.qr(torch.randn(32, 10, generator=g, dtype=torch.float64))[0].T
    x = q[:, :10] * values @ rows  # [60, 32] features: any orthonormal rows keep the SVD
    y = 2.5 * (q[:, [0, 1, 2, 10, 11, 3, 4, 5, 6, 7]] * values @ rows) @ _orthogonal(32, 6)
    feats = _stack(x, y)
    for cap, shared in ((3, 3), (4, 3), (5, 3), (6, 4), (8, 6)):
        got = sim.svcca(feats, max_components=cap)[0, 0, 1]
        assert float(got) == pytest.approx(shared / cap, abs=1e-8), cap
    # Uncapped, the 99% rule keeps nine of each (the tenth holds 1/385 of the variance):
    # q0..q8 against q0 q1 q2 q10 q11 q3 q4 q5 q6: seven shared.
    assert float(sim.svcca(feats, max_components=None)[0, 0, 1]) == pytest.approx(7 / 9, abs=1e-8)


def test_retrieval_ties_go_to_the_first_candidate_as_argmax_does():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 12, 6, generator=g)
    # Duplicate candidates: sentence 5 of language 1 equals its sentence 2 (and 9 equals 10),
    # so queries 2 and 5 (9 and 10) tie between two candidates; argmax keeps the earlier one.
    x[1, 0, 5] = x[1, 0, 2]
    x[1, 0, 10] = x[1, 0, 9]
    x[0, 0] = x[1, 0] + 0.01 * torch.randn(12, 6, generator=g)
    batched = sim.pair_metrics(x, k=2)
    expected = ref.pair_metrics(x.numpy(), k=2)
    for name in ("p1_cos", "p1_margin"):
        np.testing.assert_allclose(batched[name].double().numpy(), expected[name], atol=1e-6)
    assert batched["p1_cos"][0, 0, 1] < 1


def test_retrieval_of_a_shuffled_copy_is_perfect():
    x = torch.randn(30, 16)
    perm = torch.randperm(30)
    # Language b holds the same sentences; the parallel order is kept, the row contents equal.
    feats = _stack(x, x.clone())
    p_cos, p_margin = sim.retrieval(feats, k=3)
    assert torch.equal(p_cos[0], torch.ones(2, 2))
    assert torch.equal(p_margin[0], torch.ones(2, 2))
    # Shuffling both sides by the same permutation keeps every pair aligned.
    p_cos, _ = sim.retrieval(_stack(x[perm], x[perm].clone()), k=3)
    assert torch.equal(p_cos[0], torch.ones(2, 2))
    # Shuffling one side only breaks the alignment.
    p_cos, _ = sim.retrieval(_stack(x, x[perm]), k=3)
    assert p_cos[0, 0, 1] < 0.2


def test_margin_beats_cosine_on_a_hub():
    n = 8
    eye = torch.eye(2 * n)
    queries = eye[:n]
    # Each candidate is its query's translation at cosine 0.3 ...
    cands = 0.3 * eye[:n] + (1 - 0.09) ** 0.5 * eye[n:]
    # ... except candidate 0, a hub at cosine 1/sqrt(8) = 0.354 to every query.
    cands[0] = queries.sum(0) / n**0.5
    p_cos, p_margin = sim.retrieval(_stack(queries, cands), k=2)
    assert p_cos[0, 0, 1] == pytest.approx(1 / n)
    assert p_margin[0, 0, 1] == 1.0


def test_margin_score_equals_a_hand_computation():
    # Two queries, two candidates: cos = [[.9, .5], [.6, .7]], k = 1.
    sims = np.array([[0.9, 0.5], [0.6, 0.7]])
    r_q = sims.max(1)  # [.9, .7]
    r_c = sims.max(0)  # [.9, .7]
    margin = sims / ((r_q[:, None] + r_c[None, :]) / 2)
    assert margin[1, 0] == pytest.approx(0.6 / 0.8)
    assert margin[1, 1] == pytest.approx(1.0)
    # Vectors with exactly these cosines: unit queries and candidates in the plane.
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor(sims.T, dtype=torch.float32)
    c = torch.cat([c, (1 - c.square().sum(1, keepdim=True)).clamp_min(0).sqrt()], 1)
    q = torch.cat([q, torch.zeros(2, 1)], 1)
    got = sim.retrieval(_stack(q, c), k=1)[1][0, 0, 1]
    assert got == float(np.mean(margin.argmax(1) == np.arange(2)))


def test_batched_equals_the_per_pair_loop():
    g = torch.Generator().manual_seed(0)
    # A shared component makes languages similar; per-language noise makes them differ.
    shared = torch.randn(1, 3, 25, 20, generator=g)
    x = shared + 0.8 * torch.randn(4, 3, 25, 20, generator=g)
    for features, cap in ((x, None), (sim.center(x), 3)):
        batched = sim.pair_metrics(features, k=3, variance=0.9, max_components=cap, budget=4096)
        expected = ref.pair_metrics(features.numpy(), k=3, variance=0.9, max_components=cap)
        for name in sim.METRICS:
            np.testing.assert_allclose(
                batched[name].double().numpy(), expected[name], atol=1e-5, err_msg=name
            )


def test_chunking_does_not_change_results():
    x = torch.randn(3, 5, 12, 8)
    small = sim.pair_metrics(x, budget=1)
    large = sim.pair_metrics(x)
    for name in sim.METRICS:
        assert torch.allclose(small[name], large[name], atol=1e-6), name


def test_peaks_and_relatedness():
    values = torch.zeros(4, 3, 3)
    values[2] = 1.0
    values[1, 0, 1] = 2.0
    layers, best = pairs.peak_layers(values, [0, 3, 6, 9])
    assert layers[0, 1] == 3 and best[0, 1] == 2.0
    assert layers[1, 2] == 6
    groups = pairs.pair_groups(["en", "fr", "ru"])
    assert groups.same_script.tolist() == [
        [False, True, False],
        [True, False, False],
        [False, False, False],
    ]
    assert bool(groups.same_family[0, 2]) and not bool(groups.same_branch[0, 2])
    # A metric that is high exactly for the same-script pair correlates perfectly with it.
    metric = torch.zeros(1, 3, 3)
    metric[0, 0, 1] = metric[0, 1, 0] = 1.0
    corr = pairs.relatedness_correlation(metric, groups)
    assert corr["same_script"][0] == pytest.approx(1.0)
    assert torch.isnan(corr["same_family"][0])  # all three are Indo-European: constant


def _write(directory, name, data: bytes):
    (directory / name).write_bytes(data)


def test_parallel_files(tmp_path):
    _write(tmp_path, "en.txt", b"Hello.\nGood night.\n")
    _write(tmp_path, "fr.txt", b"Bonjour.\nBonne nuit.")
    assert read_parallel_dir(tmp_path, ["en", "fr"]) == {
        "en": ["Hello.", "Good night."],
        "fr": ["Bonjour.", "Bonne nuit."],
    }
    _write(tmp_path, "de.txt", b"Hallo.\n")
    with pytest.raises(PolylensError, match="de.txt has 1 lines but .*en.txt has 2"):
        read_parallel_dir(tmp_path, ["en", "de"])
    _write(tmp_path, "es.txt", b"Hola.\n\n")
    with pytest.raises(PolylensError, match=r"es.txt:2 is an empty line"):
        read_parallel_dir(tmp_path, ["en", "es"])
    _write(tmp_path, "ru.txt", b"\xff\xfe\n")
    with pytest.raises(PolylensError, match="ru.txt is not UTF-8"):
        read_parallel_dir(tmp_path, ["ru"])
    with pytest.raises(PolylensError, match="no file sw.txt for language 'sw'"):
        read_parallel_dir(tmp_path, ["en", "sw"])
    with pytest.raises(PolylensError, match="does not exist"):
        read_parallel_dir(tmp_path / "nope", ["en"])


def test_parallel_features_mean_leaves_out_bos(llama):
    sentences = {"en": ["The capital of France is Paris.", "x"], "fr": ["La capitale", "Paris"]}
    feats = sim.parallel_features(llama, sentences, pooling="mean", batch_size=3)
    assert feats.shape == (2, llama.n_layers, 2, llama.d_model)
    # Direct: the mean over the non-BOS tokens of one prompt, from all positions.
    from interp import extract

    rows = extract(llama, ["La capitale"], positions="all", progress=False).per_prompt()[0]
    assert torch.allclose(feats[1, :, 0], rows[1:].mean(0), atol=1e-4)
    last = sim.parallel_features(llama, sentences, pooling="last")
    assert torch.allclose(last[1, :, 0], rows[-1], atol=1e-5)


def test_unordered_reference_matches_the_ordered_one():
    x = np.random.default_rng(0).normal(size=(3, 2, 10, 6))
    full, half = ref.pair_metrics(x, k=2), ref.unordered_pair_metrics(x, k=2)
    off = ~np.eye(3, dtype=bool)
    for name in sim.METRICS:
        np.testing.assert_allclose(half[name][:, off], full[name][:, off], atol=1e-12)


def test_bench_similarity_small():
    from interp.bench import bench_similarity

    result = bench_similarity(n_langs=3, n_layers=2, n_items=20, d_model=16, repeats=1)
    assert result["pairs"] == 3
    assert max(result["max_abs_diff"].values()) < 1e-5


def test_group_curves():
    values = torch.arange(2 * 9, dtype=torch.float32).view(2, 3, 3)
    curves = pairs.group_curves(values, pairs.pair_groups(["en", "fr", "ru"]))
    mean, lo, hi = curves["same script"]
    assert mean.tolist() == [2.0, 11.0]  # (en, fr) = 1 and (fr, en) = 3 at layer 0
    mean, _, _ = curves["different script"]
    assert mean.tolist() == [(2 + 5 + 6 + 7) / 4, (2 + 5 + 6 + 7) / 4 + 9]
    assert set(pairs.group_curves(values[:, :1, :1], pairs.pair_groups(["en"]))) == set()
