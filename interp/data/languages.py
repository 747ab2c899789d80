"""The languages polylens covers (code, names, script, family, resource) and script detection."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from interp.errors import PolylensError


@dataclass(frozen=True)
class Language:
    """One language of the default set."""

    code: str
    """ISO 639-1 code."""
    name: str
    """English name."""
    endonym: str
    """The language's name for itself."""
    script: str
    """ISO 15924 code of its usual script (Jpan = Han + kana, Kore = Hangul + Han)."""
    family: str
    resource: str
    """high, medium or low: how much text the web (and so a model's training data) holds."""
    spaces: bool = True
    """Whether words are separated by spaces (not in Chinese, Japanese, Thai)."""


LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in (
        Language("en", "English", "English", "Latn", "Indo-European (Germanic)", "high"),
        Language("fr", "French", "français", "Latn", "Indo-European (Romance)", "high"),
        Language("de", "German", "Deutsch", "Latn", "Indo-European (Germanic)", "high"),
        Language("es", "Spanish", "español", "Latn", "Indo-European (Romance)", "high"),
        Language("ru", "Russian", "русский", "Cyrl", "Indo-European (Slavic)", "high"),
        Language("zh", "Chinese", "中文", "Hans", "Sino-Tibetan", "high", spaces=False),
        Language("ja", "Japanese", "日本語", "Jpan", "Japonic", "high", spaces=False),
        Language("ko", "Korean", "한국어", "Kore", "Koreanic", "medium"),
        Language("ar", "Arabic", "العربية", "Arab", "Afro-Asiatic (Semitic)", "medium"),
        Language("hi", "Hindi", "हिन्दी", "Deva", "Indo-European (Indo-Aryan)", "medium"),
        Language("sw", "Swahili", "Kiswahili", "Latn", "Niger-Congo (Bantu)", "low"),
        Language("th", "Thai", "ไทย", "Thai", "Kra-Dai", "low", spaces=False),
    )
}
DEFAULT_LANGS: tuple[str, ...] = tuple(LANGUAGES)

# Unicode character-name prefixes of the letters each script may contain.
_SCRIPT_LETTERS: dict[str, tuple[str, ...]] = {
    "Latn": ("LATIN",),
    "Cyrl": ("CYRILLIC",),
    "Hans": ("CJK",),
    "Jpan": ("CJK", "HIRAGANA", "KATAKANA"),
    "Kore": ("HANGUL", "CJK"),
    "Arab": ("ARABIC",),
    "Deva": ("DEVANAGARI",),
    "Thai": ("THAI",),
}


def languages() -> dict[str, Language]:
    """Every supported language by ISO 639-1 code."""
    return dict(LANGUAGES)


def check_langs(langs: list[str] | tuple[str, ...] | None, available=DEFAULT_LANGS) -> list[str]:
    """Validate language codes against ``available``; ``None`` means all of them."""
    if langs is None:
        return list(available)
    unknown = [code for code in langs if code not in available]
    if unknown:
        raise PolylensError(
            f"unknown or uncovered language {unknown[0]!r}; available: {', '.join(available)}"
        )
    return list(langs)


def foreign_letters(text: str, lang: str) -> list[str]:
    """Letters of ``text`` that are not in ``lang``'s script (empty when the text fits).

    Only letters count (Unicode category L*): digits, punctuation, spaces and combining marks
    (Devanagari and Thai vowel signs) are script-neutral here.
    """
    allowed = _SCRIPT_LETTERS[LANGUAGES[lang].script]
    bad = []
    for ch in text:
        if unicodedata.category(ch).startswith("L"):
            name = unicodedata.name(ch, "")
            if not name.startswith(allowed) and not name.startswith("IDEOGRAPHIC ITERATION"):
                bad.append(ch)
    return bad
