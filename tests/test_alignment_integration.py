"""Integration tier: similarity pooling, token scripts and mlp_act neurons on gemma-3-270m."""

import pytest
from tolerance import DEEP_FORWARD, assert_close_to_scale

import interp
from interp.analysis import embeddings as emb
from interp.analysis import neurons as nrn
from interp.analysis import similarity as sim
from interp.data import load

pytestmark = pytest.mark.integration


def _sentences(langs, n):
    records = load("parallel", langs)
    return {lang: [r.text for r in records if r.lang == lang][:n] for lang in langs}


def test_mean_pooling_leaves_out_gemma_bos(gemma):
    sentences = _sentences(["en", "zh"], 3)
    feats = sim.parallel_features(gemma, sentences, pooling="mean", batch_size=6)
    assert feats.shape == (2, 19, 3, 640)
    rows = interp.extract(gemma, [sentences["zh"][1]], positions="all", progress=False)
    tokens = rows.per_prompt()[0]
    # Gemma's BOS residual is orders of magnitude larger than the others': it must not count.
    assert tokens[0].norm(dim=-1)[6] > 5 * tokens[1:].norm(dim=-1)[:, 6].max()
    assert_close_to_scale(feats[1, :, 1], tokens[1:].mean(0), DEEP_FORWARD)


def test_gemma_token_scripts(gemma):
    scripts = emb.token_scripts(gemma.tokenizer)
    counts = emb.script_counts(scripts)
    assert len(scripts) == 262144
    for script in ("Latin", "Cyrillic", "Han", "Kana", "Hangul", "Arabic", "Devanagari", "Thai"):
        assert counts[script] > 500, script
    water = gemma.tokenizer(" water", add_special_tokens=False)["input_ids"]
    assert len(water) == 1 and scripts[water[0]] == "Latin"


def test_gemma_activation_probability(gemma):
    probs, tokens = nrn.activation_probability(gemma, _sentences(["en", "th"], 4), batch_size=8)
    assert probs.shape == (18, 2048, 2)
    assert tokens["en"] > 20 and ((probs >= 0) & (probs <= 1)).all()
