"""Unit tier: token scripts, chunked nearest neighbours, separability and neighbour diversity."""

import torch

from interp.analysis import embeddings as emb


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


# Tokens on a circle (cosine = cosine of the angle between them), so that every token's nearest
# neighbours can be read off by hand: token i sits at ANGLES[i] degrees. Sorted by angle:
# 0 (0), 1 (10), 7 (45), 2 (100), 9 (120), 8 (140), 11 (170), 3 (200), 5 (215), 4 (265), 6 (300),
# 10 (330).
ANGLES = (0, 10, 100, 200, 265, 215, 300, 45, 140, 120, 330, 170)
# water and fire in three languages, tea without German, taxi one token shared by en and de.
WORDS = {
    "water": {"en": 0, "fr": 1, "de": 2},
    "fire": {"en": 3, "fr": 4, "de": 5},
    "tea": {"en": 6, "fr": 7},
    "taxi": {"en": 8, "de": 8},
}
SCRIPTS = ["Latin"] * 12
SCRIPTS[2] = SCRIPTS[5] = "Cyrillic"
SCRIPTS[8] = SCRIPTS[9] = SCRIPTS[11] = "Han"
SCRIPTS[10] = "Arabic"


def _circle() -> torch.Tensor:
    rad = torch.tensor(ANGLES, dtype=torch.float64).deg2rad()
    return 3.0 * torch.stack([rad.cos(), rad.sin()], 1)  # the norm does not matter to cosine


def test_translation_neighbours_on_a_circle_of_known_neighbours():
    table = _circle()
    # Nearest first, by angular distance (the token itself left out):
    # 0: 1 (10), 10 (30)    1: 0 (10), 7 (35)     7: 1 (35), 0 (45)     2: 9 (20), 8 (40)
    # 8: 9 (20), 11 (30)    3: 5 (15), 11 (30)    5: 3 (15), 11 (45)    4: 6 (35), 5 (50)
    # 6: 10 (30), 4 (35)
    near = emb.word_neighbours(table, WORDS, k=2)
    assert near == {
        0: [1, 10], 1: [0, 7], 2: [9, 8], 3: [5, 11], 4: [6, 5],
        5: [3, 11], 6: [10, 4], 7: [1, 0], 8: [9, 11],
    }  # fmt: skip
    # Concepts counted per ordered pair: both languages have a token and the tokens differ
    # (taxi is one token in en and de: left out). Langs sorted: de, en, fr.
    langs, rate, n = emb.translation_neighbours(table, WORDS, k=1)
    assert langs == ["de", "en", "fr"]
    assert n.tolist() == [[0, 2, 2], [2, 0, 3], [2, 3, 0]]
    # k = 1. en->fr: water (0 -> 1) yes, fire (3 -> 5, not 4) no, tea (6 -> 10, not 7) no: 1/3.
    # fr->en: water (1 -> 0) yes, fire (4 -> 6) no, tea (7 -> 1) no: 1/3.
    # en->de: water (0 -> 1) no, fire (3 -> 5) yes: 1/2. de->en: water (2 -> 9) no, fire yes.
    # fr->de and de->fr: none.
    third = 1 / 3
    expected = [[0, 0.5, 0], [0.5, 0, third], [0, third, 0]]
    assert torch.allclose(rate, torch.tensor(expected), atol=1e-6)
    # k = 2, from the neighbours above: fr->de fire (4 -> 6, 5) is now a hit; the rest stay.
    langs, rate, n = emb.translation_neighbours(table, WORDS, k=2, neighbours=near)
    expected = [[0, 0.5, 0], [0.5, 0, third], [0.5, third, 0]]
    assert torch.allclose(rate, torch.tensor(expected), atol=1e-6)
    assert torch.equal(emb.translation_neighbours(table, WORDS, k=2)[1], rate)


def test_neighbour_scripts_by_language_is_a_hand_count():
    near = emb.word_neighbours(_circle(), WORDS, k=2)
    shares = emb.neighbour_scripts_by_language(WORDS, near, SCRIPTS)
    # de tokens 2, 5, 8: neighbours 9 8 | 3 11 | 9 11: Han 5, Latin 1 (of 6).
    # en tokens 0, 3, 6, 8: 1 10 | 5 11 | 10 4 | 9 11: Han 3, Latin 2, Arabic 2, Cyrillic 1.
    # fr tokens 1, 4, 7: 0 7 | 6 5 | 1 0: Latin 5, Cyrillic 1.
    assert shares == {
        "de": {"Han": 5 / 6, "Latin": 1 / 6},
        "en": {"Han": 3 / 8, "Latin": 2 / 8, "Arabic": 2 / 8, "Cyrillic": 1 / 8},
        "fr": {"Latin": 5 / 6, "Cyrillic": 1 / 6},
    }
    assert [next(iter(v)) for v in shares.values()] == ["Han", "Han", "Latin"]  # most first


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
    assert shares["en"]["Latin"] > 0.9
