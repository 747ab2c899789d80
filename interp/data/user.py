r"""The user's own data in the public formats of each field, checked with one clear error per file.

Parallel text comes as public test sets distribute it (FLORES, Tatoeba, WMT): one plain UTF-8
file per language, one sentence per line, line i of every file the same sentence. Every file is
read with ``interp.checks.read_text_file`` (a byte-order mark dropped, an unreadable file one
line) and split on ``\n`` only (``interp.checks.split_lines``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from interp.checks import read_text_file, split_lines
from interp.errors import PolylensError


def language_files(
    directory: str | Path, langs: Sequence[str], pattern: str, what: str
) -> dict[str, Path]:
    """``{lang: directory / pattern.format(lang=lang)}``, every file checked to exist.

    Args:
        directory: the user's data directory.
        langs: the languages whose files must be there.
        pattern: the file name of one language, e.g. ``"{lang}.txt"`` or ``"harmful_{lang}.json"``.
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
        path = directory / pattern.format(lang=lang)
        if not path.is_file():
            raise PolylensError(
                f"{what} directory {directory} has no file {path.name} for language {lang!r}; "
                "add it or drop the language from langs"
            )
        paths[lang] = path
    return paths


def read_parallel_dir(directory: str | Path, langs: Sequence[str]) -> dict[str, list[str]]:
    """Line-aligned parallel sentences from ``<directory>/<lang>.txt``, one file per language.

    Args:
        directory: holds one ``<lang>.txt`` per language (ISO 639-1 code), UTF-8, one sentence
            per line; a final newline is optional.
        langs: the languages to read, in this order.

    Returns:
        ``{lang: sentences}``, every list the same length.

    Raises:
        PolylensError: the directory or a language's file is missing, a file cannot be read or
            is not UTF-8, has an empty (or whitespace-only) line, or has another line count than
            the first file.
    """
    out: dict[str, list[str]] = {}
    first: tuple[Path, int] | None = None
    for lang, path in language_files(directory, langs, "{lang}.txt", "parallel").items():
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
