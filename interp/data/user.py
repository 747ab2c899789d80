r"""The user's own data in the public formats of each field, checked with one clear error per file.

Parallel text comes as public test sets distribute it: polylens's own ``<lang>.txt`` per language,
FLORES+ (``devtest/devtest.eng_Latn``: one file per ISO 639-3 code and ISO 15924 script, per
split) or NTREX-128 (``newstest2019-ref.deu.txt``); in every layout a plain UTF-8 file per
language, one sentence per line, line i of every file the same sentence. The layout is told from
the files present, and ISO 639-1 codes (``zh``) are matched to the published tags (``cmn_Hans``,
``zho-CN``) with ``langcodes``, not a hand table.

Word lists come as Wendler et al. publish them in their repository llm-latent-language: a
``data/langs/<lang>/clean.csv`` per language, with the English word in ``word_original`` and the
word in that language in ``word_translation``, aligned across languages by the English word.

Every file is read with ``interp.checks.read_text_file`` (a byte-order mark dropped, an unreadable
file one line) and split on ``\n`` only (``interp.checks.split_lines``).
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import langcodes

from interp.checks import read_text_file, split_lines
from interp.data.languages import LANGUAGES
from interp.data.records import Word
from interp.errors import PolylensError

log = logging.getLogger(__name__)

PARALLEL_SPLITS = ("dev", "devtest")
"""The public FLORES+ splits (its ``test`` split is blind and not distributed)."""
WORD_COLUMNS = ("word_original", "word_translation")
"""The columns of Wendler et al.'s ``clean.csv`` that polylens reads (others are ignored)."""
WORD_FILE = "{lang}/clean.csv"
"""Where a language's word list lies in the words directory (llm-latent-language's
``data/langs``)."""

# FLORES+ language codes: ISO 639-3, ISO 15924 script, optionally a Glottocode (apc_Arab_sout3123).
_FLORES_CODE = r"[a-z]{3}_[A-Z][a-z]{3}(?:_[a-z]{4}[0-9]{4})?"
_FLORES_ANY = re.compile(rf"(?:(?:dev|devtest)\.)?{_FLORES_CODE}(?:\.dev|\.devtest|\.txt)?")
# NTREX-128: the English source and one reference per language (an optional script or region
# suffix, e.g. srp-Latn, zho-CN, eng-GB); the second Spanish reference (ref-2) is not read.
_NTREX = re.compile(r"newstest2019-(?:src|ref)\.([a-z]{3}(?:-[A-Za-z0-9]+)?)\.txt")
# Scripts that stand for one another: polylens's Korean is Kore (Hangul + Han), FLORES+ tags it
# Hang.
_SAME_SCRIPT = {"Kore": {"Kore", "Hang"}}


def language_files(
    directory: str | Path, langs: Sequence[str], pattern: str, what: str
) -> dict[str, Path]:
    """``{lang: directory / pattern.format(lang=lang)}``, every file checked to exist.

    Args:
        directory: the user's data directory.
        langs: the languages whose files must be there.
        pattern: the file name of one language, e.g. ``"{lang}.txt"`` or ``"harmful_{lang}.json"``
            (a path below the directory, such as ``"{lang}/clean.csv"``, works too).
        what: what the directory holds, for the error (``"parallel"``, ``"facts"``).

    Raises:
        PolylensError: one line naming the missing directory, or the first missing file and its
            language.
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise PolylensError(f"{what} directory {directory} does not exist or is not a directory")
    paths = {}
    for lang in langs:
        name = pattern.format(lang=lang)
        path = directory / name
        if not path.is_file():
            raise PolylensError(
                f"{what} directory {directory} has no file {name} for language {lang!r}; "
                "add it or drop the language from langs"
            )
        paths[lang] = path
    return paths


# --- word lists (Wendler et al., llm-latent-language) -------------------------------------------


def _read_word_csv(path: Path) -> dict[str, list[str]]:
    """``{English word: its forms in the file's language}`` from one ``clean.csv``, file order.

    A word listed twice gathers both translations (the first is the main form).
    """
    text = read_text_file(path, "word list")
    if not text.strip():
        raise PolylensError(
            f"word list {path} is empty; give a header line with word_original and "
            "word_translation, then one word per line"
        )
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    words: dict[str, list[str]] = {}
    try:
        header = [name.strip() for name in next(reader)]
        missing = [c for c in WORD_COLUMNS if c not in header]
        if missing:
            raise PolylensError(
                f"word list {path} has no column {missing[0]!r} (its header: "
                f"{', '.join(header)[:120]}); Wendler et al.'s clean.csv has word_original (the "
                "English word) and word_translation (the word in the folder's language)"
            )
        cols = [header.index(c) for c in WORD_COLUMNS]
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            where = f"word list {path}:{reader.line_num}"
            if len(row) <= max(cols):
                raise PolylensError(
                    f"{where} has {len(row)} field(s) but the header has {len(header)}; "
                    "quote a field that holds a comma"
                )
            english, word = (row[i].strip() for i in cols)
            for column, value in zip(WORD_COLUMNS, (english, word)):
                if not value:
                    raise PolylensError(
                        f"{where} has an empty {column}; every line needs the English word "
                        "and its translation"
                    )
            forms = words.setdefault(english, [])
            if word not in forms:
                forms.append(word)
    except csv.Error as e:
        raise PolylensError(f"word list {path}:{reader.line_num} is not valid CSV ({e})") from None
    if not words:
        raise PolylensError(f"word list {path} has a header but no words; add one word per line")
    return words


def read_word_lists(directory: str | Path, langs: Sequence[str]) -> list[Word]:
    """Word records from Wendler et al.'s lists ``<directory>/<lang>/clean.csv``, as published.

    The records are those the bundled ``words`` dataset gives (``interp.data.load("words")``):
    one per (concept, language), the concept named by its English word, item-major order. The
    lists are aligned by ``word_original``: a concept is kept when every language's list has it.
    English is read from ``en/clean.csv`` where that file exists, else it is ``word_original``
    itself.

    Args:
        directory: holds one ``<lang>/clean.csv`` per language (llm-latent-language's
            ``data/langs``): CSV, a header naming at least ``word_original`` and
            ``word_translation`` (other columns are ignored), one word per line.
        langs: ISO 639-1 codes of the languages to read, in this order.

    Returns:
        ``Word`` records with ``id`` ``word:<English>``, ``gloss`` the English word, ``category``
        ``user`` and ``forms`` every translation the list gives for the word.

    Raises:
        PolylensError: one line naming the directory or file: a missing directory or language
            file, a file that cannot be read, is not UTF-8 or not CSV, is empty, lacks a column,
            has a short line or an empty word, or shares no English word with the lists before it.
    """
    directory = Path(directory).expanduser()
    langs = list(dict.fromkeys(langs))
    others = [lang for lang in langs if lang != "en"]
    with_file = [
        lang
        for lang in langs
        if lang != "en" or not others or (directory / WORD_FILE.format(lang="en")).is_file()
    ]
    paths = language_files(directory, with_file, WORD_FILE, "words")
    tables = {lang: _read_word_csv(path) for lang, path in paths.items()}
    common: list[str] = []
    for i, (lang, path) in enumerate(paths.items()):
        common = list(tables[lang]) if i == 0 else [w for w in common if w in tables[lang]]
        if not common:
            raise PolylensError(
                f"word list {path} has no English word (word_original) in common with the "
                f"list(s) of {', '.join(list(paths)[:i])} under {directory}; the lists are "
                "aligned by word_original"
            )
    return [
        Word(f"word:{english}", lang, english, "user", tuple(_forms(tables, lang, english)))
        for english in common
        for lang in langs
    ]


def _forms(tables: dict[str, dict[str, list[str]]], lang: str, english: str) -> list[str]:
    """The word's forms in ``lang``; English without a list of its own is the English word."""
    return tables[lang][english] if lang in tables else [english]


# --- parallel text (polylens, FLORES+, NTREX-128) -----------------------------------------------


@dataclass(frozen=True)
class ParallelText:
    """Line-aligned sentences read from a user's directory, and where they came from."""

    layout: str
    """``polylens`` (``<lang>.txt``), ``FLORES+`` or ``NTREX-128``."""
    paths: dict[str, Path]
    """The file read for each language."""
    sentences: dict[str, list[str]]
    """``{lang: sentences}``, every list the same length."""


@dataclass(frozen=True)
class _Tagged:
    """A file of a public layout, with the language its tag names."""

    path: Path
    tag: str
    language: str
    """As ``langcodes`` reads the tag, the macrolanguage preferred (cmn -> zh, arb -> ar)."""
    script: str | None
    plain: bool
    """No region or variant in the tag (fra, not fra-CA; eng, not eng-GB)."""


def _tagged(path: Path, tag: str) -> _Tagged | None:
    try:
        parsed = langcodes.Language.get(tag.replace("_", "-")).prefer_macrolanguage()
    except ValueError:  # langcodes.LanguageTagError
        return None
    script = parsed.script or parsed.maximize().script
    plain = parsed.territory is None and not parsed.variants
    return _Tagged(path, tag, parsed.language or "", script, plain)


def _files(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.is_file())
    except OSError as e:
        raise PolylensError(
            f"cannot list parallel directory {directory}: {e.strerror or e}"
        ) from None


def _flores_files(directory: Path, split: str) -> list[_Tagged]:
    """The FLORES+ files of ``split`` in ``directory``, with their tags.

    Names: ``<split>.<code>`` (FLORES+ releases), ``<code>.<split>`` (FLORES-200), ``<code>`` or
    ``<code>.txt``.
    """
    code = _FLORES_CODE
    name = re.compile(rf"{split}\.(?P<a>{code})|(?P<b>{code})(?:\.{split}|\.txt)?")
    out = []
    for path in _files(directory):
        m = name.fullmatch(path.name)
        if m and (tagged := _tagged(path, m["a"] or m["b"])) is not None:
            out.append(tagged)
    return out


def _ntrex_files(directory: Path) -> list[_Tagged]:
    out = []
    for path in _files(directory):
        m = _NTREX.fullmatch(path.name)
        if m and (tagged := _tagged(path, m[1])) is not None:
            out.append(tagged)
    return out


def _example_tag(lang: str) -> str:
    """An ISO 639-3 code for ``lang`` (langcodes' ``to_alpha3``), e.g. ``zho`` for ``zh``."""
    return langcodes.Language.get(lang).to_alpha3()


def _pick(lang: str, files: list[_Tagged], where: str, looked_for: str) -> Path:
    """The one file of ``files`` for ``lang``.

    The only one; of several, those in the script of polylens's data for the language, then the
    plain tag among them (eng, not eng-GB).
    """
    mine = [f for f in files if f.language == lang]
    want = LANGUAGES[lang].script
    if not mine:
        raise PolylensError(
            f"{where} has no file for language {lang!r} ({LANGUAGES[lang].name}): looked for "
            f"{looked_for}; add it or drop the language from langs"
        )
    if len(mine) == 1:
        if mine[0].script not in _SAME_SCRIPT.get(want, {want}):
            log.warning(
                "%s: script %s, polylens's %s data is %s", mine[0].path, mine[0].script, lang, want
            )
        return mine[0].path
    same = [f for f in mine if f.script in _SAME_SCRIPT.get(want, {want})] or mine
    plain = [f for f in same if f.plain] or same
    if len(plain) == 1:
        return plain[0].path
    raise PolylensError(
        f"{where} has several files for language {lang!r} "
        f"({', '.join(f.path.name for f in plain)}) and polylens cannot tell which to read: it "
        f"prefers the one in {want} script (the script of its {LANGUAGES[lang].name} data), then "
        "the one without a region; move the others out of the directory"
    )


def _read_aligned(paths: dict[str, Path]) -> dict[str, list[str]]:
    """Every file's lines, checked: not empty, no empty line, the same count in every file."""
    out: dict[str, list[str]] = {}
    first: tuple[Path, int] | None = None
    for lang, path in paths.items():
        lines = split_lines(read_text_file(path, "parallel file"))
        if not lines:
            raise PolylensError(f"parallel file {path} is empty; give one sentence per line")
        empty = next((i for i, line in enumerate(lines, 1) if not line.strip()), None)
        if empty is not None:
            raise PolylensError(
                f"parallel file {path}:{empty} is an empty line; every line must hold the "
                "sentence aligned with the same line of the other files"
            )
        if first is None:
            first = (path, len(lines))
        elif len(lines) != first[1]:
            raise PolylensError(
                f"parallel file {path} has {len(lines)} lines but {first[0]} has {first[1]}; "
                "the files must be line-aligned"
            )
        out[lang] = lines
    return out


def parallel_files(
    directory: str | Path, langs: Sequence[str], split: str = "devtest"
) -> tuple[str, dict[str, Path]]:
    """The layout of a parallel directory, told from its files, and each language's file.

    Layouts, in this order: polylens's ``<lang>.txt`` (any file named after a polylens
    language); NTREX-128 (``newstest2019-ref.<code>.txt``, ``newstest2019-src.eng.txt`` for
    English; in the directory or its ``NTREX-128/`` folder); FLORES+ (``<split>.<code>_<Script>``
    as FLORES+ releases name them, ``<code>_<Script>.<split>`` as FLORES-200 did, or
    ``<code>_<Script>`` with or without ``.txt``; in the directory or its ``<split>/`` folder).
    A language's file is the one whose tag ``langcodes`` reads as that language (``cmn_Hans``,
    ``zho_Hans`` and ``zho-CN`` are all ``zh``); of several, the one in the script of polylens's
    data for the language (``zh``: Hans), then the one without a region (NTREX's English source,
    not ``eng-GB``).

    Args:
        directory: the user's parallel directory.
        langs: ISO 639-1 codes of the languages to read.
        split: the FLORES+ split to read (``dev`` or ``devtest``); other layouts ignore it.

    Returns:
        The layout (``polylens``, ``NTREX-128`` or ``FLORES+``) and ``{lang: path}``.

    Raises:
        PolylensError: one line: the directory is missing, matches no layout (the line lists
            what was looked for), lacks a language's file, or has several files for a language
            and none preferred.
    """
    if split not in PARALLEL_SPLITS:
        raise PolylensError(f"unknown FLORES+ split {split!r}; use dev or devtest")
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise PolylensError(f"parallel directory {directory} does not exist or is not a directory")
    names = {p.name for p in _files(directory)}
    if any(f"{code}.txt" in names for code in LANGUAGES):
        return "polylens", language_files(directory, langs, "{lang}.txt", "parallel")
    ntrex_dir = directory / "NTREX-128" if (directory / "NTREX-128").is_dir() else directory
    if ntrex := _ntrex_files(ntrex_dir):
        where = f"parallel directory {ntrex_dir} (NTREX-128)"
        return "NTREX-128", {
            lang: _pick(
                lang,
                ntrex,
                where,
                f"newstest2019-ref.{_example_tag(lang)}.txt (any ISO 639-3 code that langcodes "
                f"reads as {lang!r}, with an optional script or region suffix)",
            )
            for lang in langs
        }
    split_dirs = [s for s in PARALLEL_SPLITS if (directory / s).is_dir()]
    if split_dirs and split not in split_dirs:
        raise PolylensError(
            f"parallel directory {directory} has the FLORES+ split folder {split_dirs[0]}/ but "
            f"no {split}/; set parallel_split: {split_dirs[0]} or add {split}/"
        )
    flores_dir = directory / split if split_dirs else directory
    if any(_FLORES_ANY.fullmatch(p.name) for p in _files(flores_dir)):
        flores = _flores_files(flores_dir, split)
        where = f"parallel directory {flores_dir} (FLORES+, split {split})"
        return "FLORES+", {
            lang: _pick(
                lang,
                flores,
                where,
                f"{split}.{_example_tag(lang)}_{LANGUAGES[lang].script} or the like "
                f"(<split>.<code>_<Script>, <code>_<Script>.<split> or <code>_<Script>, any "
                f"ISO 639-3 code that langcodes reads as {lang!r})",
            )
            for lang in langs
        }
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in flores_dir.iterdir())
    found = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
    parquet = (
        " (Parquet files, as the Hugging Face copy of FLORES+ has them, are not read: write each "
        "split's text column out one sentence per line)"
        if any(e.endswith(".parquet") for e in entries)
        else ""
    )
    raise PolylensError(
        f"parallel directory {flores_dir} matches none of the layouts polylens reads: "
        "<lang>.txt per language (en.txt, fr.txt, ...), FLORES+ (dev/ or devtest/ holding "
        "devtest.eng_Latn-style files, or such files directly), NTREX-128 "
        f"(newstest2019-ref.deu.txt, ...); it holds {found or 'nothing'}{parquet}"
    )


def read_parallel(
    directory: str | Path, langs: Sequence[str], split: str = "devtest"
) -> ParallelText:
    """Line-aligned parallel sentences in any layout ``parallel_files`` reads.

    Args:
        directory: polylens's ``<lang>.txt`` files, a FLORES+ folder or an NTREX-128 folder;
            every file UTF-8, one sentence per line (CRLF line ends too), a final newline
            optional.
        langs: the languages to read, in this order.
        split: the FLORES+ split (``dev`` or ``devtest``).

    Returns:
        The layout, each language's file and ``{lang: sentences}``.

    Raises:
        PolylensError: as ``parallel_files``; or a file cannot be read or is not UTF-8, is empty,
            has an empty (or whitespace-only) line, or has another line count than the first.
    """
    layout, paths = parallel_files(directory, langs, split)
    return ParallelText(layout, paths, _read_aligned(paths))


def read_parallel_dir(
    directory: str | Path, langs: Sequence[str], split: str = "devtest"
) -> dict[str, list[str]]:
    """``{lang: sentences}`` of ``read_parallel`` (polylens's ``<lang>.txt``, FLORES+, NTREX-128).

    Args:
        directory: the user's parallel directory (see ``parallel_files`` for the layouts).
        langs: the languages to read, in this order.
        split: the FLORES+ split (``dev`` or ``devtest``).

    Returns:
        ``{lang: sentences}``, every list the same length.

    Raises:
        PolylensError: as ``read_parallel``.
    """
    return read_parallel(directory, langs, split).sentences
