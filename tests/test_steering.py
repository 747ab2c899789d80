"""Unit tier: steering vectors, controls, the stacked sweep (== one generation per setting, token
for token), the neuron arm, the per-answer metrics and the best-setting rule, on tiny models."""

import json
import math

import pytest
import torch
from tiny import save_tiny, tiny_model

from interp import PolylensError, extract, intervene, recording
from interp.analysis import steering as st
from interp.analysis import steering_sweep as sw
from interp.analysis.refusal_behaviour import answer_fluency
from interp.analysis.similarity import parallel_activations

PROMPTS = [
    "The capital of France is",
    "La capitale",
    "法国的首都是",
    "x",
    "Mji mkuu wa Ufaransa ni Paris na",
]
SENTENCES = {
    "en": ["The sun rises early.", "I like green tea.", "The river is cold."],
    "fr": ["Le soleil se lève tôt.", "J'aime le thé vert.", "La rivière est froide."],
    "de": ["Die Sonne geht früh auf.", "Ich mag grünen Tee.", "Der Fluss ist kalt."],
}


@pytest.fixture(scope="module")
def vectors(llama):
    acts = parallel_activations(llama, SENTENCES, pooling="mean", progress=False)
    return st.steering_vectors(st.language_means(acts))


def _settings(model, vector, neuron_values):
    """Every arm: unsteered, vectors at several layers and coefficients, controls, neurons."""
    mask = torch.zeros(model.n_blocks, neuron_values.shape[-1], dtype=torch.bool)
    mask[0, [1, 5, 9]] = True
    mask[2, 20:40] = True
    off = torch.zeros_like(mask)
    off[1, 3] = True
    return [
        sw.Setting("none"),
        *sw.vector_settings("vector", vector, [0, 1, 3], [0.0, 12.0]),
        *sw.vector_settings("random", st.random_control(vector), [2], [12.0]),
        *sw.neuron_settings(mask, neuron_values, [1.0, 4.0], deactivate=off),
    ]


def test_steering_vector_is_the_hand_mean_difference(llama, vectors):
    assert vectors.shape == (3, 3, llama.n_layers, llama.d_model)
    hand = {}
    for lang, lines in SENTENCES.items():
        # Each sentence's token residuals, BOS left out, averaged; then over sentences.
        rows = extract(llama, lines, positions="all", progress=False).per_prompt()
        hand[lang] = torch.stack([r[1:].mean(0) for r in rows]).mean(0)
    assert torch.allclose(vectors[0, 1], hand["fr"] - hand["en"], atol=1e-5)
    assert torch.allclose(vectors[2, 0], hand["en"] - hand["de"], atol=1e-5)
    assert torch.equal(vectors[1, 1], torch.zeros_like(vectors[1, 1]))


def test_random_control_has_the_requested_norm(vectors):
    v = vectors[0, 1]
    r = st.random_control(v, seed=3)
    assert torch.allclose(r.norm(dim=-1), v.norm(dim=-1), rtol=1e-5)
    assert torch.equal(r, st.random_control(v, seed=3))
    cos = torch.nn.functional.cosine_similarity(r[1:], v[1:], dim=-1)
    assert (cos.abs() < 0.6).all()  # a random direction in 64 dimensions, not the vector


def test_unrelated_control(vectors):
    langs = list(SENTENCES)
    lang, u = st.unrelated_control(vectors, langs, "en", "fr")
    assert lang == "de"
    assert torch.allclose(u.norm(dim=-1), vectors[0, 1].norm(dim=-1), rtol=1e-5)
    cos = torch.nn.functional.cosine_similarity(u, vectors[0, 2], dim=-1)
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5)
    with pytest.raises(PolylensError, match="unrelated"):
        st.unrelated_control(vectors, langs, "en", "fr", unrelated="fr")


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_stacked_sweep_equals_one_generation_per_setting(arch):
    model = tiny_model(arch)
    acts = parallel_activations(model, SENTENCES, pooling="mean", progress=False)
    vector = st.steering_vectors(st.language_means(acts))[0, 1]
    values = st.neuron_means(model, SENTENCES)[1]
    settings = _settings(model, vector, values)
    options = dict(max_new_tokens=8, batch_size=3)
    # 7 rows per pass: two settings of a 3-prompt batch at a time, mixing layers and arms.
    stacked = sw.generate_stacked(model, PROMPTS, settings, rows_per_pass=7, **options)
    each = sw.generate_each(model, PROMPTS, settings, **options)
    assert stacked.ids == each.ids
    assert stacked.texts == each.texts
    all_in_one = sw.generate_stacked(model, PROMPTS, settings, rows_per_pass=10_000, **options)
    assert all_in_one.ids == each.ids
    # Every edit acts (each non-zero setting changes some answer), so the equality is not vacuous.
    assert all(stacked.ids[i] != stacked.ids[0] for i, s in enumerate(settings) if s.coeff)
    assert all(stacked.ids[i] == stacked.ids[0] for i, s in enumerate(settings) if not s.coeff)
    with intervene(model, settings[9].edits()):
        assert model.generate(PROMPTS, **options) == stacked.texts[9]


def test_coefficient_zero_reproduces_unsteered_generation(llama, vectors):
    settings = sw.vector_settings("vector", vectors[0, 1], [0, 2, 3], [0.0])
    got = sw.generate_stacked(llama, PROMPTS, [sw.Setting("none"), *settings], max_new_tokens=8)
    plain = llama.generate(PROMPTS, max_new_tokens=8)
    assert all(texts == plain for texts in got.texts)
    assert all(ids == got.ids[0] for ids in got.ids)


def test_neuron_arm_sets_the_chosen_units(llama):
    values = st.neuron_means(llama, SENTENCES)
    mask = torch.zeros(llama.n_blocks, 128, dtype=torch.bool)
    mask[1, [4, 50]] = True
    (setting,) = sw.neuron_settings(mask, values[1], [2.0])
    with intervene(llama, setting.edits()), recording(llama, "mlp_act.1") as rec:
        llama.logits(PROMPTS[:2])
    got = rec["mlp_act.1"][0]
    want = 2.0 * values[1, 1, [4, 50]]
    assert torch.allclose(got[..., [4, 50]], want.expand_as(got[..., [4, 50]]))


def test_neuron_means_by_hand(llama):
    text = "The capital of France is Paris."
    means = st.neuron_means(llama, {"en": [text], "zh": ["法国的首都是巴黎。", "x"]})
    assert means.shape == (2, llama.n_blocks, 128)
    with recording(llama, "mlp_act.2") as rec:
        llama.logits([text])
    assert torch.allclose(means[0, 2], rec["mlp_act.2"][0][0, 1:].mean(0).cpu(), atol=1e-6)


def test_setting_checks_and_description():
    with pytest.raises(PolylensError, match="layer and a vector"):
        sw.Setting("vector", layer=2)
    with pytest.raises(PolylensError, match="neurons and values"):
        sw.Setting("neurons", neurons=torch.zeros(2, 3, dtype=torch.bool))
    s = sw.Setting("vector", layer=1, coeff=4.0, vector=torch.ones(8), label="x")
    assert s.describe() == {"arm": "vector", "layer": 1, "coeff": 4.0, "label": "x"}
    assert sw.Setting("none").edits() == {}


def test_instructed_prompts():
    assert st.instructed(["Why?"], "fr") == ["Why?\nAnswer in French."]
    got = st.instructed(["Why?"], "ja", template="{language}: {message}")
    assert got == ["Japanese: Why?"]


def test_repetition_rate():
    # seq-rep-4 over tokens: 5 four-grams, 4 distinct.
    assert st.repetition_rate([1, 2, 3, 4, 1, 2, 3, 4]) == pytest.approx(1 - 4 / 5)
    assert st.repetition_rate([7] * 6) == pytest.approx(1 - 1 / 3)
    assert st.repetition_rate([1, 2, 3, 4, 5]) == 0.0
    assert st.repetition_rate([1, 2, 3, 4]) == 0.0  # one four-gram: nothing to repeat
    assert st.repetition_rate([]) == 0.0


def test_repetition_reads_tokens_in_every_script(llama):
    """A loop without spaces ("itititit") is caught: the metric reads the tokenizer's ids."""
    answers = [["it" * 12, "wala " * 6, "The river is cold and the sky is clear today."]]
    m = st.steering_metrics(llama, ["a", "b", "c"], answers, answers[0], "sw")
    assert m["repetition"][0, 0] > 0.5 and m["repetition"][0, 1] > 0.5
    assert m["repetition"][0, 2] < 0.2


def test_meaning_similarity(llama):
    refs = ["The sun rises early.", "Le soleil se lève tôt.", ""]
    answers = ["The sun rises early.", "The river is cold.", "x", ""]
    cos, p1 = st.meaning_similarity(llama, answers, refs, [0, 1, 2, 0])
    assert cos[0] == pytest.approx(1.0, abs=1e-5) and p1[0] == 1
    assert -1 <= cos[1] < 1
    assert math.isnan(cos[2]) and math.isnan(p1[2])  # the reference is empty
    assert math.isnan(cos[3]) and math.isnan(p1[3])  # the answer is empty


def test_steering_metrics_on_literal_answers(llama):
    prompts = ["The weather today is", "My favourite food is"]
    plain = ["sunny and warm in the whole city.", "pizza with a lot of cheese."]
    answers = [
        plain,
        ["ensoleillé et chaud dans toute la ville.", ""],
        ["Bonjour à tous.\nHello there, my friend.", "très bon très bon très bon très bon"],
    ]
    m = st.steering_metrics(llama, prompts, answers, plain, "fr")
    assert set(m) == set(st.METRICS)
    assert all(v.shape == (3, 2) for v in m.values())
    assert m["success"][0].tolist() == [0.0, 0.0] and m["success"][1, 0] == 1
    assert torch.allclose(m["meaning"][0], torch.ones(2), atol=1e-5)
    assert (m["meaning_p1"][0] == 1).all()
    assert math.isnan(m["meaning"][1, 1]) and math.isnan(m["fluency"][1, 1])
    assert m["repetition"][2, 1] > 0.5
    assert m["line_pass"][1, 0] == 1 and m["line_pass"][2, 0] == 0  # an English line
    assert math.isnan(m["word_pass"][2, 0])  # line-confused: not read at word level
    fluency = answer_fluency(llama, prompts[:1], plain[:1])[0]
    assert float(m["fluency"][0, 0]) == pytest.approx(fluency, abs=1e-5)

    settings = [sw.Setting("none"), sw.Setting("prompt"), sw.Setting("other")]
    rows = st.summarize(settings, m, n_boot=50)
    assert rows[1]["success"] == 0.5 and rows[1]["n"] == 2
    assert rows[1]["success_low"] <= 0.5 <= rows[1]["success_high"]
    assert rows[1]["fluency"] == pytest.approx(float(m["fluency"][1, 0]))
    assert rows[2]["lpr"] == 0.5 and rows[2]["lcpr"] is not None


def test_best_setting_rule():
    def row(arm, layer, coeff, success, fluency, repetition=0.1):
        return {"arm": arm, "layer": layer, "coeff": coeff, "success": success,
                "fluency": fluency, "repetition": repetition}  # fmt: skip

    rows = [
        row("native", None, 0.0, 1.0, -2.0),  # the reference: answers asked in the target
        row("none", None, 0.0, 0.0, -0.5),
        row("vector", 2, 1.0, 1.0, -1.0, repetition=0.5),  # a fluent loop: out
        row("vector", 4, 1.0, 0.0, -1.0),  # no success: never best
        row("vector", 3, 8.0, 1.0, -3.5),  # most success, but 1.5 nats below: out
        row("vector", 5, 4.0, 0.8, -2.5),
        row("vector", 6, 2.0, 0.8, -2.5),  # same success and fluency: smaller coefficient
        row("vector", 7, 2.0, 0.5, -2.0),
        row("random", 3, 8.0, 0.9, -2.1),  # another arm
    ]
    assert st.best_setting(rows, arm="vector")["layer"] == 6
    assert st.best_setting(rows, arm="vector", tolerance=2.0)["layer"] == 3
    assert st.best_setting(rows, arm="vector", repetition_tolerance=0.5)["layer"] == 2
    assert st.best_setting(rows, arm="vector", reference=rows[1]) is None  # -0.5: none within 1
    assert st.best_setting(rows, arm="random")["layer"] == 3
    assert st.best_setting([rows[0], rows[3]], arm="vector") is None
    with pytest.raises(PolylensError, match="a reference row with a fluency, or a 'native' row"):
        st.best_setting(rows[1:], arm="vector")


def test_parallel_sentences_bundled_and_user_dir(tmp_path):
    bundled = st.parallel_sentences(["en", "fr"])
    assert len(bundled["en"]) == len(bundled["fr"]) > 100
    for lang, lines in SENTENCES.items():
        (tmp_path / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert st.parallel_sentences(["fr", "de"], parallel_dir=str(tmp_path)) == {
        "fr": SENTENCES["fr"],
        "de": SENTENCES["de"],
    }


def test_bench_steering_and_cli(tmp_path):
    from experiments.cli import main
    from interp.bench import bench_steering

    result = bench_steering(
        tiny_model("llama"), n_prompts=3, layer_stride=2, coeffs="0,4", max_new_tokens=4
    )
    assert result["n_settings"] == 1 + 2 * 2  # layers 1 and 3 of 4, two coefficients, unsteered
    assert result["same_ids"] == 1.0 and result["same_texts"] == 1.0
    with pytest.raises(PolylensError, match="coeffs"):
        bench_steering(tiny_model("llama"), coeffs="2,x")
    directory = str(save_tiny("llama", tmp_path / "tiny"))
    out = tmp_path / "b.json"
    argv = ["bench", "steering", "--model", directory, "--n-prompts", "2", "--coeffs", "8"]
    assert main([*argv, "--max-new-tokens", "3", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["same_ids"] == 1.0
