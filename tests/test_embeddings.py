"""Unit tier: token scripts, chunked nearest neighbours, separability and neighbour diversity."""

import pytest
import torch

from interp import embeddings as emb


def test_script_of():
    assert emb.script_of("▁water") == "Latin"
    assert emb.script_of(" вода") == "Cyrillic"
    assert emb.script_of("水") == "Han"
    assert emb.script_of("ひらがな") == "Kana"
    assert emb.script_of("물") == "Hangul"
    assert emb.script_of("नमस्ते") == "Devanagari"  # vowel signs and virama are Devanagari marks
    assert emb.script_of("น้ำ") == "Thai"
    assert emb.script_of("ماء") == "Arabic"
    assert emb.script_of("Ａ") == "Latin"  # fullwidth
    assert emb.script_of(" 42, ") == "none"
    assert emb.script_of("\ufffd") == "none"
    assert emb.script_of("abcд") == "mixed"


def test_token_scripts(llama):
    scripts = emb.token_scripts(llama.tokenizer)
    assert len(scripts) == len(llama.tokenizer)
    assert scripts[1] == "special"
    counts = emb.script_counts(scripts)
    assert counts["Latin"] > 0 and counts["Han"] > 0


def test_nearest_tokens_chunked_equals_full():
    table = torch.randn(1000, 16)
    queries = torch.tensor([3, 500, 999])
    full = emb.nearest_tokens(table[queries], table, 7, exclude=queries, chunk=5000)
    chunked = emb.nearest_tokens(table[queries], table, 7, exclude=queries, chunk=33)
    assert torch.equal(full, chunked)
    unit = table / table.norm(dim=-1, keepdim=True)
    sims = unit[queries] @ unit.T
    sims[torch.arange(3), queries] = -torch.inf
    assert torch.equal(full, sims.topk(7).indices)


def _two_scripts(separated: bool):
    g = torch.Generator().manual_seed(0)
    table = torch.randn(600, 8, generator=g)
    scripts = ["Latin"] * 300 + ["Cyrillic"] * 300
    if separated:
        table[:300, 0] += 6.0
    return table, scripts


def test_separability_and_diversity():
    table, scripts = _two_scripts(True)
    sep = emb.script_separability(table, scripts, per_script=300, min_tokens=10)
    assert sep.balanced_accuracy > 0.95 and sep.chance == 0.5
    div = emb.neighbour_diversity(table, scripts, k=10, per_script=50, min_tokens=10)
    assert div["Latin"]["other_script"] < 0.1 and div["Latin"]["chance"] == 0.5
    table, scripts = _two_scripts(False)
    sep = emb.script_separability(table, scripts, per_script=300, min_tokens=10)
    assert sep.balanced_accuracy < 0.7
    div = emb.neighbour_diversity(table, scripts, k=10, per_script=50, min_tokens=10)
    assert 0.3 < div["Latin"]["other_script"] < 0.7


def test_translation_neighbours():
    table = torch.randn(100, 8)
    table[10] = table[20] + 0.01  # en token 10 sits next to fr token 20
    words = {"water": {"en": 10, "fr": 20}, "fire": {"en": 30, "fr": 40}, "tea": {"en": 5}}
    langs, rate, n = emb.translation_neighbours(table, words, k=1)
    assert langs == ["en", "fr"]
    assert n[0, 1] == 2 and n[0, 0] == 0
    assert rate[0, 1] == 0.5 and rate[1, 0] == 0.5


def test_neighbour_scripts_by_language_explains_a_zero_hit_rate():
    # "hi" words sit in a cluster of tokens of another script (as Hindi words sit among Bengali
    # tokens in gemma-3-270m): their translations are never among their nearest tokens, though
    # every word is a single token.
    g = torch.Generator().manual_seed(0)
    table = torch.randn(60, 16, generator=g)
    centre = 5 * torch.randn(16, generator=g)
    table[40:60] = centre + 0.1 * torch.randn(20, 16, generator=g)  # 40-49 Hindi, 50-59 Bengali
    table[0:10] = table[10:20] + 0.01  # en words next to their fr translations
    words = {f"w{i}": {"en": i, "fr": 10 + i, "hi": 40 + i} for i in range(10)}
    scripts = ["Latin"] * 40 + ["Devanagari"] * 10 + ["Bengali"] * 10
    near = emb.word_neighbours(table, words, k=5)
    langs, rate, n = emb.translation_neighbours(table, words, k=5, neighbours=near)
    hi = langs.index("hi")
    assert n[hi].tolist() == [10, 10, 0] and rate[hi].sum() == 0
    assert rate[langs.index("en"), langs.index("fr")] == 1
    shares = emb.neighbour_scripts_by_language(words, near, scripts)
    assert set(shares["hi"]) <= {"Devanagari", "Bengali"}
    assert sum(shares["hi"].values()) == pytest.approx(1)
    assert shares["en"]["Latin"] > 0.9
    # Precomputed neighbours give the same rates as a fresh search.
    assert torch.equal(emb.translation_neighbours(table, words, k=5)[1], rate)
