"""The user's fact files, as the field publishes them and in polylens's own layout: ``FactPrompt``s.

Three layouts, told apart by the files in the directory (``facts_layout``; ``read_facts_dir``
reads whichever is there):

- **mLAMA** as Kassner et al. 2021 distribute it (``interp.analysis.mlama``): one folder per
  language, ``<lang>/templates.jsonl`` (JSON lines with ``relation`` and ``template``, the
  template holding ``[X]`` for the subject and ``[Y]`` for the object) and per relation
  ``<lang>/<relation>.jsonl``, one TREx-style fact per line (``sub_uri``, ``sub_label``,
  ``obj_uri``, ``obj_label``, ...). A fact is the same in every language when its subject and
  object URIs are; the facts of a relation are those present in every language. Candidates are
  the relation's objects named in every language (the other objects of the same subject left
  out), keyed by their URI.
- **BMLAMA-17/53** as Qi et al. 2023 ship it (``read_bmlama_dir``): one ``<lang>.tsv`` per
  language with the columns ``Prompt`` (the cloze with ``<mask>``), ``Ans`` (the answer; several
  are comma-separated), ``Candidate Ans`` (comma-separated, in the same concept order in every
  language) and ``Subject``. Row i is the same fact in every language; a fact's relation is its
  prompt with the subject replaced by ``[X]`` (English, else the first language whose prompt holds
  its subject).
- **polylens's own** five-column TSV (``read_polylens_tsv_dir``), one ``<lang>.tsv`` per
  language::

    id      relation  prompt                            answer  candidates
    P36-1   capital   The capital of France is <mask>.  Paris   Paris|London|Berlin

  Row i is the same fact in every language; ``candidates`` is ``|``-separated, in the same
  concept order in every language.

In every layout the prompt is the text before the answer's slot (``<mask>`` or ``[Y]``); the text
after it is dropped, since a causal model predicts the answer from what precedes it. Every
malformed file is one line naming the file and its line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from interp.analysis.factual import FactPrompt
from interp.analysis.mlama import read_mlama_jsonl_dir
from interp.checks import read_text_file, split_lines
from interp.data.user import language_files
from interp.errors import PolylensError

__all__ = [
    "BMLAMA_COLUMNS",
    "LAYOUTS",
    "TSV_COLUMNS",
    "fact_file",
    "facts_layout",
    "read_bmlama_dir",
    "read_facts_dir",
    "read_polylens_tsv_dir",
]


TSV_COLUMNS = ("id", "relation", "prompt", "answer", "candidates")
"""The columns of polylens's own facts TSV."""


BMLAMA_COLUMNS = ("Prompt", "Ans", "Candidate Ans", "Subject")
"""The columns of a BMLAMA-17/53 TSV."""


LAYOUTS = {
    "mlama": "mLAMA (<lang>/templates.jsonl, <lang>/<relation>.jsonl)",
    "bmlama": "BMLAMA (<lang>.tsv: Prompt, Ans, Candidate Ans, Subject)",
    "polylens": "polylens's own (<lang>.tsv: id, relation, prompt, answer, candidates)",
}
"""The user-data layouts ``read_facts_dir`` reads, by name, as the errors and results name them."""


MASK = "<mask>"


@dataclass(frozen=True)
class _Row:
    fact_id: str
    relation: str
    prompt: str
    answer: str
    candidates: tuple[str, ...]
    line: int
    """The row's line number in its file (1 is the header's, if no blank line precedes it)."""


def _check_aligned(
    tables: dict,
    paths: dict,
    langs: Sequence[str],
    what: str,
    same_fact: Callable[[object, object, Path], None] | None = None,
) -> None:
    """Check that row i is the same fact in every language, as far as the files can tell.

    Every language has as many rows as the first, and row i as many candidates (candidate j is the
    same answer in every language); ``same_fact(first's row, other's row, other's path)`` checks
    more where the layout can (polylens's ids) before the candidates. ``what`` starts the errors.
    """
    first, first_path = tables[langs[0]], paths[langs[0]]
    for lang in langs[1:]:
        rows, path = tables[lang], paths[lang]
        if len(rows) != len(first):
            raise PolylensError(
                f"{what}{path} has {len(rows)} rows but {first_path.name} has {len(first)}; "
                "row i must be the same fact in every language"
            )
        for a, b in zip(first, rows):
            if same_fact is not None:
                same_fact(a, b, path)
            if len(a.candidates) != len(b.candidates):
                raise PolylensError(
                    f"{what}{path}:{b.line} has {len(b.candidates)} candidates but "
                    f"{first_path.name}:{a.line} has {len(a.candidates)}; candidate j must be the "
                    "same answer in every language"
                )


def read_polylens_tsv_dir(directory: str | Path, langs: Sequence[str]) -> list[FactPrompt]:
    r"""Facts from ``<directory>/<lang>.tsv`` in polylens's own layout (see the module docstring).

    Files are UTF-8 (a byte-order mark is dropped), lines end with ``\n`` or ``\r\n``, blank
    lines are skipped; errors name the file and its real line number.

    Raises:
        PolylensError: one line for a missing directory or language file, an unreadable or empty
            file, a header without rows, missing columns, a row without ``<mask>`` or with an
            empty field, an answer that is not among its candidates, or rows that are not the
            same facts in every language (ids differ, other row counts, other candidate counts).
    """
    paths = language_files(directory, langs, "{lang}.tsv", "facts")
    tables = {lang: _read_tsv(path) for lang, path in paths.items()}
    first_path = paths[langs[0]]

    def same_id(a: _Row, b: _Row, path: Path) -> None:
        if a.fact_id != b.fact_id:
            raise PolylensError(
                f"{path}:{b.line} has id {b.fact_id!r} but {first_path.name}:{a.line} has "
                f"{a.fact_id!r}; align the rows by fact"
            )

    _check_aligned(tables, paths, langs, "", same_id)
    return [
        FactPrompt(
            row.fact_id,
            lang,
            row.relation,
            row.prompt,
            row.answer,
            (),
            row.candidates,
            tuple(f"{row.fact_id}#{j}" for j in range(len(row.candidates))),
        )
        for lang in langs
        for row in tables[lang]
    ]


def _tsv_records(path: Path, what: str, columns: Sequence[str]) -> list[tuple[int, dict]]:
    r"""The rows of a tab-separated file with a header naming ``columns``: (line, values).

    Split on ``\n`` only (str.splitlines would also split on \v, \f, \x1c... inside a field),
    each row keeping its line number in the file: blank lines are skipped, not renumbered. Values
    are stripped; a short row's missing fields are empty. Extra columns are ignored.
    """
    numbered = [
        (i, line)
        for i, line in enumerate(split_lines(read_text_file(path, what)), 1)
        if line.strip()
    ]
    names = ", ".join(columns)
    if not numbered:
        raise PolylensError(
            f"{what} {path} is empty; give a header ({names}, tab-separated) and one row per fact"
        )
    header = [name.strip() for name in numbered[0][1].split("\t")]
    missing = [c for c in columns if c not in header]
    if missing:
        raise PolylensError(
            f"{what} {path} lacks the column {missing[0]!r}; the header must name {names} "
            "(tab-separated)"
        )
    if len(numbered) == 1:
        raise PolylensError(
            f"{what} {path} has a header but no rows; add one row per fact below it"
        )
    column = {c: header.index(c) for c in columns}
    out = []
    for i, line in numbered[1:]:
        fields = line.split("\t")
        out.append(
            (i, {c: (fields[k] if k < len(fields) else "").strip() for c, k in column.items()})
        )
    return out


def _read_tsv(path: Path) -> list[_Row]:
    rows, seen = [], set()
    for i, values in _tsv_records(path, "facts file", TSV_COLUMNS):
        where = f"{path}:{i}"
        empty = [c for c in TSV_COLUMNS if not values[c]]
        if empty:
            raise PolylensError(f"{where} has an empty {empty[0]!r} field; fill it or drop the row")
        if values["id"] in seen:
            raise PolylensError(f"{where} repeats the id {values['id']!r}; ids must be unique")
        seen.add(values["id"])
        if MASK not in values["prompt"]:
            raise PolylensError(f"{where}: the prompt has no {MASK}; mark where the answer goes")
        prompt = values["prompt"].split(MASK, 1)[0].rstrip()
        if not prompt:
            raise PolylensError(f"{where}: nothing precedes {MASK}; the prompt must lead to it")
        candidates = tuple(c.strip() for c in values["candidates"].split("|") if c.strip())
        if len(set(candidates)) != len(candidates):
            raise PolylensError(f"{where} lists a candidate twice; deduplicate the candidates")
        if values["answer"] not in candidates:
            raise PolylensError(
                f"{where}: the answer {values['answer']!r} is not among its candidates; add it"
            )
        rows.append(_Row(values["id"], values["relation"], prompt, values["answer"], candidates, i))
    return rows


_NO_SUBJECT = "(subject not in prompt)"
"""The relation of a BMLAMA row whose prompt holds its subject in no language."""


def facts_layout(directory: str | Path, langs: Sequence[str]) -> str:
    """Which layout of ``LAYOUTS`` the user's facts directory holds, told from its files.

    A ``<lang>`` folder for any language of ``langs`` means mLAMA; otherwise the header of the
    first ``<lang>.tsv`` decides: BMLAMA's columns (``Prompt``, ``Ans``, ``Candidate Ans``,
    ``Subject``) or polylens's own.

    Raises:
        PolylensError: one line when the directory is missing or holds no file of either layout
            for any language of ``langs``.
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise PolylensError(f"facts directory {directory} does not exist or is not a directory")
    if any((directory / lang).is_dir() for lang in langs):
        return "mlama"
    for lang in langs:
        path = directory / f"{lang}.tsv"
        if path.is_file():
            lines = split_lines(read_text_file(path, "facts file"))
            header = next((line for line in lines if line.strip()), "")
            names = {name.strip() for name in header.split("\t")}
            return "bmlama" if names & set(BMLAMA_COLUMNS) else "polylens"
    lang = langs[0]
    raise PolylensError(
        f"facts directory {directory} holds no facts for language {lang!r}: neither {lang}.tsv "
        f"(BMLAMA or polylens's own layout) nor {lang}/templates.jsonl (mLAMA); add them or "
        "point data at the folder that has them"
    )


def read_facts_dir(
    directory: str | Path,
    langs: Sequence[str],
    *,
    relations: Sequence[str] | None = None,
    max_candidates: int | None = None,
    seed: int = 0,
) -> tuple[list[FactPrompt], str]:
    """The user's facts in whichever layout ``directory`` holds, and that layout's name.

    Args:
        directory: the user's data directory (see the module docstring for the layouts).
        langs: the languages to read, the first one leading where files must agree.
        relations: for mLAMA, the relations to read (default: every relation with a template
            and a facts file in every language); the other layouts read every row.
        max_candidates: for mLAMA, most candidates per fact, the gold included (default: every
            object of the relation); the TSV layouts give their own candidates.
        seed: for mLAMA, the seed of the competitors' draw when ``max_candidates`` caps them.

    Returns:
        The facts and the layout's key in ``LAYOUTS``.
    """
    layout = facts_layout(directory, langs)
    if layout == "mlama":
        facts = read_mlama_jsonl_dir(
            directory, langs, relations=relations, max_candidates=max_candidates, seed=seed
        )
    elif layout == "bmlama":
        facts = read_bmlama_dir(directory, langs)
    else:
        facts = read_polylens_tsv_dir(directory, langs)
    return facts, layout


def fact_file(directory: str | Path, layout: str, fact: FactPrompt) -> Path:
    """The user's file that ``fact`` (read in ``layout``) comes from, for error messages."""
    directory = Path(directory).expanduser()
    if layout == "mlama":
        return directory / fact.lang / f"{fact.relation}.jsonl"
    return directory / f"{fact.lang}.tsv"


@dataclass(frozen=True)
class _BmlamaRow:
    prompt: str
    """The ``Prompt`` field as written, ``<mask>`` and all."""
    cloze: str
    answers: tuple[str, ...]
    candidates: tuple[str, ...]
    subject: str
    line: int


def read_bmlama_dir(directory: str | Path, langs: Sequence[str]) -> list[FactPrompt]:
    r"""Facts from BMLAMA-17/53's ``<directory>/<lang>.tsv`` files (see the module docstring).

    Row i is the same fact in every language, id ``row<i>``. The prompt is the text before
    ``<mask>``; the first of the row's answers is the gold, the others (``Ans`` may list several,
    comma-separated) count as aliases and leave the candidates, so the gold competes with wrong
    answers only; candidate j keeps the key ``row<i>#<j>`` in every language. The relation is the
    prompt with its subject replaced by ``[X]`` (e.g. ``[X] was born in <mask>.``), read from
    English when asked for, else from the first language whose prompt holds its subject (rows
    whose prompt holds it in no language share the relation ``(subject not in prompt)``).

    Files are UTF-8 (a byte-order mark is dropped), lines end with ``\r\n`` (as shipped) or
    ``\n``, blank lines are skipped; errors name the file and its real line number.

    Raises:
        PolylensError: one line for a missing directory or language file, an unreadable or empty
            file, a header without rows or a missing column, a row with an empty field, without
            ``<mask>`` or with nothing before it, a repeated candidate, an answer that is not
            among its candidates, or files that are not the same facts in every language (other
            row counts, other candidate counts).
    """
    paths = language_files(directory, langs, "{lang}.tsv", "facts")
    tables = {lang: _read_bmlama_tsv(path) for lang, path in paths.items()}
    _check_aligned(tables, paths, langs, "BMLAMA file ")
    first = tables[langs[0]]
    order = [lang for lang in langs if lang == "en"] + [lang for lang in langs if lang != "en"]
    out: dict[str, list[FactPrompt]] = {lang: [] for lang in langs}
    for i in range(len(first)):
        fact_id = f"row{i + 1}"
        relation = next(
            (
                tables[lang][i].prompt.replace(tables[lang][i].subject, "[X]", 1)
                for lang in order
                if tables[lang][i].subject in tables[lang][i].prompt
            ),
            _NO_SUBJECT,
        )
        for lang in langs:
            row = tables[lang][i]
            keep = [j for j, c in enumerate(row.candidates) if c not in row.answers[1:]]
            out[lang].append(
                FactPrompt(
                    fact_id,
                    lang,
                    relation,
                    row.cloze,
                    row.answers[0],
                    row.answers[1:],
                    tuple(row.candidates[j] for j in keep),
                    tuple(f"{fact_id}#{j}" for j in keep),
                )
            )
    return [f for lang in langs for f in out[lang]]


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _read_bmlama_tsv(path: Path) -> list[_BmlamaRow]:
    rows = []
    for i, values in _tsv_records(path, "BMLAMA file", BMLAMA_COLUMNS):
        where = f"BMLAMA file {path}:{i}"
        empty = [c for c in BMLAMA_COLUMNS if not values[c]]
        if empty:
            raise PolylensError(
                f"{where} has an empty {empty[0]!r} field; fill it or drop the row from every "
                "language's file"
            )
        prompt = values["Prompt"]
        if MASK not in prompt:
            raise PolylensError(f"{where}: the prompt has no {MASK}; mark where the answer goes")
        cloze = prompt.split(MASK, 1)[0].rstrip()
        if not cloze:
            raise PolylensError(f"{where}: nothing precedes {MASK}; the prompt must lead to it")
        answers, candidates = _comma_list(values["Ans"]), _comma_list(values["Candidate Ans"])
        if len(set(candidates)) != len(candidates):
            raise PolylensError(f"{where} lists a candidate twice; deduplicate Candidate Ans")
        outside = next((a for a in answers if a not in candidates), None)
        if outside is not None:
            raise PolylensError(
                f"{where}: the answer {outside!r} is not among its candidates; add it to "
                "Candidate Ans"
            )
        rows.append(_BmlamaRow(prompt, cloze, answers, candidates, values["Subject"], i))
    return rows
