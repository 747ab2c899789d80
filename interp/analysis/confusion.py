r"""Language confusion: answers not entirely in the asked language, by line and within a line.

After the Language Confusion Benchmark (LCB; Marchisio et al. 2024, "Understanding and Mitigating
Language Confusion in LLMs", ``for-ai/language-confusion``). An answer is split into lines
(``\n``); a line is *scored* when it holds at least ``min_words`` words (below). An answer with
no scored line is skipped, as LCB skips it: it counts in no rate.

- **Line-level**: an answer is line-confused when any scored line is not identified as the target
  language (``interp.analysis.language_id.detect_languages``, lingua, choosing among ``langs``
  and the target; a line lingua cannot tell counts as not the target, as LCB's "unknown").
- **Word-level**: an answer is word-confused when a scored line holds a foreign word:

  - any target: a word written in letters outside the target's script and (for non-Latin
    targets) outside Latin (``interp.data.languages.foreign_letters``): Cyrillic inside Chinese,
    Han inside Russian or French;
  - non-Latin-script target (ru, zh, ja, ko, ar, hi, th): a Latin-script word, lowercase, of at
    least 4 letters (e.g. "beautiful" inside a Japanese line; "Paris", "USB" or "km" do not
    count);
  - Latin-script target (en, fr, de, es, sw): a lowercase word of at least 4 letters that lingua
    identifies, alone, as another language with confidence at least ``word_confidence`` (0.9).

- **Rates** (LCB's): ``LPR = |R \ E_L| / |R|``, the line-level pass rate over scored answers
  ``R`` (``E_L``: the line-confused ones); ``WPR = |(R \ E_L) \ E_W| / |R \ E_L|``, the
  word-level pass rate over the answers without line-level confusion (``E_W``: the word-confused
  ones);
  ``LCPR = 2 LPR WPR / (LPR + WPR)``, their harmonic mean (0 when both are 0).
  ``line_confusion = 1 - LPR`` and ``word_confusion = 1 - WPR``.

Where this differs from LCB's ``compute_metrics.py``:

- line identification is lingua among polylens's languages (and the target), not fastText
  ``lid.176`` over 176 languages with a 0.3 score floor; lingua is built for short text (on the
  bundled sentences it names 98% of their first two words right), so a line needs 2 words here,
  not LCB's 5 tokens (pass ``min_words=5`` for LCB's rule);
- words are runs of letters of one script (spaces, digits and punctuation end one), each Han,
  kana or Thai letter counting as a word (LCB segments Chinese with jieba and Japanese with
  MeCab); LCB also strips ASCII punctuation and cuts a completion at ``"\nQ:"`` (its few-shot
  format), which is not done here;
- word-level errors for non-Latin targets: LCB flags words of an English dictionary (lowercase,
  longer than 3 letters); here every lowercase Latin word of 4 letters or more (an English
  dictionary is not shipped, and lingua alone is unreliable on single words: it names "hello"
  Spanish and "computer" German). French or German words count too, as would a lowercase
  identifier or URL; words of a third script count as well (LCB checks English only);
- LCB reports no WPR for Latin-script targets ("inaccurate"); here the lingua rule above gives
  one. It is conservative: at 0.9 it flags none of the 760 bundled sentences of the five
  Latin-script languages, and catches about 15% of single English words, 34-62% of single words
  of French, Spanish, German or Swahili, inside another Latin-script language's line;
- ``LCPR`` where WPR is undefined (no answer passes line level) is LPR itself.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interp.analysis.language_id import detect_languages, language_set, top_languages
from interp.data.languages import LANGUAGES, foreign_letters
from interp.errors import PolylensError

__all__ = [
    "AnswerConfusion",
    "answer_confusion",
    "confusion_flags",
    "confusion_rates",
    "harmonic_mean",
    "line_words",
    "pass_rates",
    "script_words",
]

_UNSPACED = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "IDEOGRAPHIC")
"""Unicode name prefixes of letters of scripts written without spaces: one letter, one word."""

MIN_WORD_LETTERS = 4
"""Shortest foreign word counted (LCB's dictionary filter: longer than 3 letters)."""


@dataclass(frozen=True)
class AnswerConfusion:
    """Line- and word-level confusion of one answer."""

    line_languages: tuple[str | None, ...]
    """The language of each scored line (None: lingua cannot tell)."""
    line_confused: bool | None
    """Some scored line is not in the target language; None: no line scored (skipped)."""
    foreign_words: tuple[str, ...]
    """Foreign words found in the scored lines (see the module docstring)."""

    @property
    def scored(self) -> bool:
        """Whether any line was scored (otherwise the answer counts in no rate)."""
        return self.line_confused is not None

    @property
    def word_confused(self) -> bool | None:
        """Some scored line holds a foreign word; None when no line was scored."""
        return None if not self.scored else bool(self.foreign_words)


def _script(ch: str) -> str | None:
    """The script key of a letter (first word of its Unicode name), None for a non-letter."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    name = unicodedata.name(ch, "")
    return "CJK" if name.startswith(("CJK", "IDEOGRAPHIC")) else name.split(" ")[0]


def script_words(line: str) -> list[str]:
    """Words of ``line``: runs of letters of one script, each Han, kana or Thai letter alone.

    Combining marks (Devanagari and Thai vowel signs, accents) stay with the word they follow;
    spaces, digits and punctuation end a word.
    """
    words: list[str] = []
    current, script = "", None
    for ch in line:
        kind = _script(ch)
        if kind is None:
            if current and unicodedata.category(ch).startswith("M"):
                current += ch
                continue
            if current:
                words.append(current)
            current, script = "", None
        elif unicodedata.name(ch, "").startswith(_UNSPACED):
            if current:
                words.append(current)
            words.append(ch)
            current, script = "", None
        elif kind == script:
            current += ch
        else:
            if current:
                words.append(current)
            current, script = ch, kind
    if current:
        words.append(current)
    return words


def line_words(text: str) -> list[list[str]]:
    """The words of each line of ``text`` (``script_words``), empty lines included."""
    return [script_words(line) for line in text.split("\n")]


def _is_latin(word: str) -> bool:
    return all(_script(ch) in (None, "LATIN") for ch in word)


def _candidate_word(word: str) -> bool:
    """A lowercase word of at least ``MIN_WORD_LETTERS`` letters (LCB's dictionary filter)."""
    return word.islower() and sum(ch.isalpha() for ch in word) >= MIN_WORD_LETTERS


def answer_confusion(
    texts: Sequence[str],
    target: str,
    *,
    langs: Sequence[str] | None = None,
    min_words: int = 2,
    word_confidence: float = 0.9,
) -> list[AnswerConfusion]:
    """Line- and word-level confusion of each answer, for answers meant to be in ``target``.

    Args:
        texts: the answers (one lingua call for all their lines, one for their words).
        target: the language the answers should be in, one of polylens's twelve.
        langs: languages lingua chooses among (the target is always added); None: polylens's
            twelve.
        min_words: a line is scored when it has at least this many words (LCB: 5 tokens).
        word_confidence: lingua's confidence above which a Latin word is another language's.

    Returns:
        One ``AnswerConfusion`` per text.
    """
    if target not in LANGUAGES:
        raise PolylensError(f"unknown target language {target!r}; use one of {list(LANGUAGES)}")
    if min_words < 1 or not 0 < word_confidence <= 1:
        raise PolylensError("answer_confusion needs min_words >= 1 and word_confidence in (0, 1]")
    candidates = sorted(set(language_set(langs)) | {target})
    latin_target = LANGUAGES[target].script == "Latn"
    scored: list[list[tuple[str, list[str]]]] = []
    for text in texts:
        lines = [(line.strip(), words) for line, words in zip(text.split("\n"), line_words(text))]
        scored.append([(line, words) for line, words in lines if len(words) >= min_words])
    flat_lines = [line for answer in scored for line, _ in answer]
    found = iter(detect_languages(flat_lines, candidates))
    latin_words = sorted(
        {
            w
            for answer in scored
            for _, words in answer
            for w in words
            if _is_latin(w) and _candidate_word(w)
        }
    )
    other_language = (
        _confident_other(latin_words, target, candidates, word_confidence)
        if latin_target
        else set(latin_words)
    )
    out = []
    for answer in scored:
        languages = tuple(next(found) for _ in answer)
        foreign = []
        for _, words in answer:
            for w in words:
                if _is_latin(w):
                    if w in other_language:
                        foreign.append(w)
                elif foreign_letters(w, target):
                    foreign.append(w)
        out.append(
            AnswerConfusion(
                line_languages=languages,
                line_confused=None if not answer else any(x != target for x in languages),
                foreign_words=tuple(foreign),
            )
        )
    return out


def _confident_other(
    words: Sequence[str], target: str, candidates: Sequence[str], confidence: float
) -> set[str]:
    """The ``words`` lingua, alone, confidently names a language other than ``target``."""
    if not words:
        return set()
    found = top_languages(words, candidates)
    return {
        word
        for word, top in zip(words, found)
        if top is not None and top[1] >= confidence and top[0] != target
    }


def harmonic_mean(a: float | None, b: float | None) -> float | None:
    """``2ab / (a + b)``: LCB's LCPR from LPR and WPR (0 when both are 0; ``a`` when b is None)."""
    if a is None or b is None:
        return a
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def _rates(line_pass: torch.Tensor, word_pass: torch.Tensor) -> tuple[float, float | None]:
    """LPR over scored answers and WPR over the line-passing ones, from 0/1 flags."""
    lpr = float(line_pass.mean())
    passing = line_pass.bool()
    wpr = float(word_pass[passing].mean()) if passing.any() else None
    return lpr, wpr


def pass_rates(
    line_pass: Float[Tensor, " answer"],
    word_pass: Float[Tensor, " answer"],
    *,
    n_boot: int = 0,
    seed: int = 0,
) -> dict[str, float | int | None]:
    """LCB's LPR, WPR and LCPR from per-answer flags, with 95% bootstrap intervals.

    Args:
        line_pass: 1 where an answer passes line level, 0 where it is line-confused, NaN where
            it was not scored.
        word_pass: 1 / 0 where an answer has no / some foreign word (read only where
            ``line_pass`` is 1).
        n_boot: bootstrap resamples of the scored answers (0: no intervals); LPR, WPR and LCPR
            are recomputed on each resample, so the intervals hold the ratio and the harmonic
            mean.
        seed: seed of the resampling.

    Returns:
        ``n``, ``n_scored``, ``lpr``, ``wpr``, ``lcpr``, ``line_confusion`` (1 - LPR),
        ``word_confusion`` (1 - WPR); with ``n_boot``, ``{name}_low`` / ``{name}_high`` for
        ``lpr``, ``wpr`` and ``lcpr``. Rates are None where no answer was scored (WPR: where no
        answer passes line level).
    """
    scored = ~line_pass.isnan()
    line, word = line_pass[scored].double(), word_pass[scored].double().nan_to_num(0.0)
    out: dict[str, float | int | None] = {"n": len(line_pass), "n_scored": len(line)}
    names = ("lpr", "wpr", "lcpr")
    if not len(line):
        out |= dict.fromkeys((*names, "line_confusion", "word_confusion"))
        if n_boot > 0:
            out |= {f"{k}_{e}": None for k in names for e in ("low", "high")}
        return out
    lpr, wpr = _rates(line, word)
    out |= {
        "lpr": lpr,
        "wpr": wpr,
        "lcpr": harmonic_mean(lpr, wpr),
        "line_confusion": 1 - lpr,
        "word_confusion": None if wpr is None else 1 - wpr,
    }
    if n_boot > 0:
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, len(line), (n_boot, len(line)), generator=gen)
        draws: dict[str, list[float]] = {k: [] for k in names}
        for row in idx:
            b_lpr, b_wpr = _rates(line[row], word[row])
            draws["lpr"].append(b_lpr)
            draws["lcpr"].append(harmonic_mean(b_lpr, b_wpr))
            if b_wpr is not None:
                draws["wpr"].append(b_wpr)
        for name, values in draws.items():
            v = torch.tensor(values, dtype=torch.float64)
            empty = not len(v)
            out[f"{name}_low"] = None if empty else float(v.quantile(0.025))
            out[f"{name}_high"] = None if empty else float(v.quantile(0.975))
    return out


def confusion_flags(
    answers: Sequence[AnswerConfusion],
) -> tuple[Float[Tensor, " answer"], Float[Tensor, " answer"]]:
    """``(line_pass, word_pass)`` of each answer as ``pass_rates`` reads them (NaN: not scored)."""
    nan = math.nan
    line = [nan if not a.scored else float(not a.line_confused) for a in answers]
    word = [nan if a.line_confused is not False else float(not a.word_confused) for a in answers]
    return torch.tensor(line), torch.tensor(word)


def confusion_rates(
    answers: Sequence[AnswerConfusion], *, n_boot: int = 0, seed: int = 0
) -> dict[str, float | int | None]:
    """``pass_rates`` of the answers ``answer_confusion`` judged (LPR, WPR, LCPR)."""
    return pass_rates(*confusion_flags(answers), n_boot=n_boot, seed=seed)
