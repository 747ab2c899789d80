"""Which language a text is in: the language of a model's generated answer.

Generation-based judgements (does the model answer in the prompt's language, or fall back to
English?) need the language of short generated texts. polylens asks `lingua`_ for it, wrapped
here once for the library:

- offline: its n-gram models ship inside the wheel, nothing is fetched at run time;
- it covers all twelve of polylens's languages (``interp.data.languages.LANGUAGES``) and 63 more;
- it is built for short text: on the bundled parallel sentences (152 per language) it names every
  sentence right, and 98% of their first two words (``tests/test_language_id.py``).

By default the detector chooses among polylens's twelve languages only. A restricted set is both
more accurate and faster on short texts: over all 75 languages lingua gets 98% of the bundled
sentences right (Hindi taken for Marathi, Russian for Ukrainian or Serbian, Spanish for Catalan
or Portuguese) and is about 25 times slower. The price: an answer in a thirteenth language shows
as the closest of the twelve (Portuguese as Spanish, Ukrainian as Russian) or as None. Pass
``langs`` to choose among other languages.

None means no language: the text is empty, holds no letters (digits, punctuation, emoji), or
lingua cannot tell (letters of a script none of the languages is written in, or a tie).

No minimum relative distance is set (lingua's default): on the sentences' first two or three
words, a distance of 0.1 turns about two right answers into None for every wrong one it avoids,
and it does not catch answers in a thirteenth language, which stay confidently wrong.

.. _lingua: https://github.com/pemistahl/lingua-py
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder

from interp.data.languages import LANGUAGES
from interp.errors import PolylensError


def detect_languages(texts: Sequence[str], langs: Sequence[str] | None = None) -> list[str | None]:
    """The ISO 639-1 code of each text's language, or None where there is none to tell.

    Args:
        texts: The texts, e.g. a table's generated answers (one call for all of them).
        langs: ISO 639-1 codes to choose among, any that lingua knows; None: polylens's twelve
            languages (a text in another language then shows as the closest of them, or None).

    Returns:
        One code per text, None where the text is empty, has no letters or lingua cannot tell.

    Raises:
        PolylensError: ``langs`` is empty or names a code lingua does not know.
    """
    detector = _detector(language_set(langs))
    out: list[str | None] = [None] * len(texts)
    todo = [i for i, text in enumerate(texts) if any(ch.isalpha() for ch in text)]
    found = detector.detect_languages_in_parallel_of([texts[i] for i in todo])
    for i, language in zip(todo, found):
        out[i] = None if language is None else language.iso_code_639_1.name.lower()
    return out


def answer_language(text: str, langs: Sequence[str] | None = None) -> str | None:
    """The ISO 639-1 code of one text's language, or None (see ``detect_languages``)."""
    return detect_languages([text], langs)[0]


def top_languages(
    texts: Sequence[str], langs: Sequence[str] | None = None
) -> list[tuple[str, float] | None]:
    """Each text's most likely language among ``langs`` and lingua's confidence in it (0 to 1).

    lingua's confidence values (``compute_language_confidence_values``) of each text alone:
    how sure it is of that text's language, e.g. of a single word's. None where the text has no
    letters or lingua gives no language. ``langs`` as ``detect_languages`` takes it.
    """
    detector = _detector(language_set(langs))
    out: list[tuple[str, float] | None] = [None] * len(texts)
    todo = [i for i, text in enumerate(texts) if any(ch.isalpha() for ch in text)]
    ranked = detector.compute_language_confidence_values_in_parallel([texts[i] for i in todo])
    for i, values in zip(todo, ranked):
        if values:
            out[i] = (values[0].language.iso_code_639_1.name.lower(), values[0].value)
    return out


def language_set(langs: Sequence[str] | None) -> tuple[str, ...]:
    """``langs`` as a sorted tuple of codes lingua knows (None: polylens's twelve).

    Raises:
        PolylensError: ``langs`` is empty or names a code lingua does not know.
    """
    if langs is None:
        return tuple(sorted(LANGUAGES))
    if isinstance(langs, str):
        langs = [langs]
    if not langs:
        raise PolylensError("no language to choose among; pass ISO 639-1 codes, or None for all 12")
    known = _known_codes()
    unknown = [code for code in langs if code not in known]
    if unknown:
        raise PolylensError(
            f"language identification does not know {unknown[0]!r}; use ISO 639-1 codes it "
            f"covers: {', '.join(sorted(known))}"
        )
    return tuple(sorted(set(langs)))


@cache
def _known_codes() -> frozenset[str]:
    return frozenset(language.iso_code_639_1.name.lower() for language in Language.all())


@cache
def _detector(codes: tuple[str, ...]) -> LanguageDetector:
    """One detector per language set: building one is slow, and its models load once, lazily.

    Preloading the models (``with_preloaded_language_models``) was measured not worth it: the
    twelve languages' models take about a second to load either way, and lazily only the ones a
    text's script needs are read.
    """
    languages = [Language.from_iso_code_639_1(getattr(IsoCode639_1, c.upper())) for c in codes]
    return LanguageDetectorBuilder.from_languages(*languages).build()
