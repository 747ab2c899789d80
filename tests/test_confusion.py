"""Unit tier: line- and word-level language confusion and LCB's LPR / WPR / LCPR, on hand-written
answers whose verdicts are known."""

import math

import pytest
import torch

from interp import PolylensError
from interp.analysis.confusion import (
    answer_confusion,
    confusion_flags,
    confusion_rates,
    harmonic_mean,
    pass_rates,
    script_words,
)


def test_script_words_split_at_scripts_and_unspaced_letters():
    assert script_words("今日はbeautifulな日") == ["今", "日", "は", "beautiful", "な", "日"]
    assert script_words("नमस्ते दुनिया, hello!") == ["नमस्ते", "दुनिया", "hello"]
    assert script_words("c'est 2 fois") == ["c", "est", "fois"]
    assert script_words("...") == []


def test_english_line_in_a_french_answer_is_line_confused():
    (a,) = answer_confusion(["Bonjour à tous.\nHello there, my friend."], "fr")
    assert a.line_languages == ("fr", "en")
    assert a.line_confused is True
    (b,) = answer_confusion(["Le soleil se lève tôt.\nIl fait très beau aujourd'hui."], "fr")
    assert b.line_confused is False and b.word_confused is False


def test_short_lines_are_not_scored():
    # "Bonjour." has one word: with min_words=2 only the English line is read.
    (a,) = answer_confusion(["Bonjour.\nHello there."], "fr")
    assert a.line_languages == ("en",) and a.line_confused
    (b,) = answer_confusion(["Bonjour.\n42"], "fr")
    assert not b.scored and b.line_confused is None and b.word_confused is None
    (c,) = answer_confusion(["Bonjour.\nHello there."], "fr", min_words=1)
    assert c.line_languages == ("fr", "en")


def test_english_word_inside_a_japanese_line_is_word_confused():
    (a, b, c) = answer_confusion(
        [
            "今日はとてもbeautifulな日です。",
            "今日はとても良い日です。\nパリに行きました。",
            "東京でiPhoneとUSBを買いました。",
        ],
        "ja",
    )
    assert a.line_confused is False and a.word_confused and a.foreign_words == ("beautiful",)
    assert b.line_confused is False and not b.word_confused
    assert not c.word_confused  # a capitalised name and an acronym are not switches


def test_foreign_script_inside_a_line():
    (zh,) = answer_confusion(["我今天很高兴，谢谢你们，спасибо朋友们。"], "zh")
    assert zh.line_confused is False and zh.foreign_words == ("спасибо",)  # Cyrillic in Chinese
    (ru,) = answer_confusion(["Сегодня я купил 书 в магазине."], "ru")
    assert ru.line_confused is False and ru.foreign_words == ("书",)
    (fr,) = answer_confusion(["Le mot 中文 veut dire chinois."], "fr")
    assert fr.line_confused is False and set(fr.foreign_words) == {"中", "文"}


def test_latin_target_flags_confident_foreign_words_only():
    (a, b) = answer_confusion(
        [
            "Je pense que c'est important because il fait beau",
            "Je suis allé au marché hier avec mes amis.",
        ],
        "fr",
    )
    assert a.line_confused is False and a.foreign_words == ("because",)
    assert b.line_confused is False and not b.word_confused


def test_rates_by_hand():
    texts = [
        "Le soleil se lève tôt en été.",  # passes both levels
        "Bonjour à tous.\nHello there, my friend.",  # line-confused
        "Je pense que c'est important because il fait beau",  # word-confused
        "Le chat dort sur le canapé.",  # passes both
        "42",  # not scored
    ]
    answers = answer_confusion(texts, "fr")
    rates = confusion_rates(answers)
    assert rates["n"] == 5 and rates["n_scored"] == 4
    lpr, wpr = 3 / 4, 2 / 3
    assert rates["lpr"] == pytest.approx(lpr)
    assert rates["wpr"] == pytest.approx(wpr)
    assert rates["lcpr"] == pytest.approx(2 * lpr * wpr / (lpr + wpr))
    assert rates["line_confusion"] == pytest.approx(1 / 4)
    assert rates["word_confusion"] == pytest.approx(1 / 3)
    line, word = confusion_flags(answers)
    assert line[:4].tolist() == [1, 0, 1, 1] and math.isnan(line[4])
    assert word[[0, 2, 3]].tolist() == [1, 0, 1] and math.isnan(word[1])


def test_bootstrap_intervals_hold_the_rates():
    line = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 0.0, math.nan])
    word = torch.tensor([1.0, math.nan, 0.0, 1.0, 1.0, math.nan, math.nan])
    rates = pass_rates(line, word, n_boot=200, seed=1)
    for name in ("lpr", "wpr", "lcpr"):
        assert rates[f"{name}_low"] <= rates[name] <= rates[f"{name}_high"]
    assert rates == pass_rates(line, word, n_boot=200, seed=1)
    assert pass_rates(torch.tensor([math.nan]), torch.tensor([math.nan]))["lpr"] is None


def test_harmonic_mean():
    assert harmonic_mean(0.5, 1.0) == pytest.approx(2 / 3)
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(0.7, None) == 0.7  # WPR undefined: LCPR is LPR


def test_checks():
    with pytest.raises(PolylensError, match="target"):
        answer_confusion(["x"], "xx")
    with pytest.raises(PolylensError, match="min_words"):
        answer_confusion(["x"], "fr", min_words=0)
