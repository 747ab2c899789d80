"""Bundled multilingual datasets: parallel across languages, validated, nothing downloaded.

``load(name, langs=None, split=None)`` returns typed records, one per (item, language);
``names()`` lists the datasets; ``languages()`` describes the languages. See ``README.md`` here for
the data cards.
"""

from interp.data.languages import DEFAULT_LANGS, LANGUAGES, Language, languages
from interp.data.loader import covered_langs, load, names, prompts_of
from interp.data.records import BoundaryQuestion, Fact, Instruction, Prompt, Sentence, Word

__all__ = [
    "DEFAULT_LANGS",
    "LANGUAGES",
    "BoundaryQuestion",
    "Fact",
    "Instruction",
    "Language",
    "Prompt",
    "Sentence",
    "Word",
    "covered_langs",
    "languages",
    "load",
    "names",
    "prompts_of",
]
