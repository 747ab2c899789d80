"""Facts to score: the bundled ``facts`` set or the user's mLAMA-style TSV files, as ``FactPrompt``.

Every fact carries candidates that are parallel across languages: candidate j of a fact is the
same concept in every language (``FactPrompt.candidate_keys``), so rankings compare across
languages. Prompts are few-shot clozes: ``n_demos`` other facts of the same relation and language,
each completed with its answer on its own line, then the test fact's cloze. Demonstrations are
drawn per fact id with the seed, never the fact itself, and are the same facts in every language.

User data comes as multilingual LAMA (mLAMA) distributes it, one TSV per language::

    id      relation  prompt                          answer  candidates
    P36-1   capital   The capital of France is <mask>.  Paris   Paris|London|Berlin

Row i is the same fact in every language; the text before ``<mask>`` is the prompt (the text after
it is dropped); ``candidates`` is ``|``-separated, in the same concept order in every language.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from interp.analysis.factual import FactPrompt, continuation
from interp.checks import read_text_file, split_lines
from interp.data import load
from interp.data.languages import LANGUAGES
from interp.data.user import language_files
from interp.errors import PolylensError

__all__ = [
    "TSV_COLUMNS",
    "bundled_facts",
    "country_languages",
    "read_mlama_dir",
    "with_demonstrations",
]

TSV_COLUMNS = ("id", "relation", "prompt", "answer", "candidates")
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


def bundled_facts(
    langs: Sequence[str],
    *,
    n_per_relation: int | None,
    max_candidates: int,
    seed: int,
    relations: Sequence[str] | None = None,
) -> list[FactPrompt]:
    """Zero-shot facts of the bundled ``facts`` set, one per (fact, language).

    Args:
        langs: the languages (every fact is asked in each).
        n_per_relation: facts per relation, drawn with the seed (all when None).
        max_candidates: most candidates per fact, the gold included: the other objects of the
            relation, drawn with the seed per fact id (the same objects in every language).
        seed: seed of both draws.
        relations: the relations to keep (all when None).
    """
    if max_candidates < 2:
        raise PolylensError("max_candidates must be at least 2 (the gold and one competitor)")
    records = load("facts", langs=list(langs))
    by_id: dict[str, dict] = {}
    for r in records:
        by_id.setdefault(r.id, {})[r.lang] = r
    known = sorted({r.relation for r in records})
    if relations is not None:
        unknown = [x for x in relations if x not in known]
        if unknown:
            raise PolylensError(f"unknown relation {unknown[0]!r}; known: {', '.join(known)}")
    keep = known if relations is None else list(relations)
    out: list[FactPrompt] = []
    for relation in keep:
        ids = sorted(i for i, per in by_id.items() if next(iter(per.values())).relation == relation)
        names, pool = _object_names([by_id[i] for i in ids], langs)
        chosen = list(ids)
        random.Random(f"{seed}:{relation}").shuffle(chosen)
        if n_per_relation is not None:
            chosen = chosen[:n_per_relation]
        for fact_id in sorted(chosen):
            per = by_id[fact_id]
            gold = next(iter(per.values())).object_code
            others = sorted(
                code
                for code in pool
                if all(names[code][lang] != names[gold][lang] for lang in langs)
            )
            random.Random(f"{seed}:{fact_id}").shuffle(others)
            codes = [gold, *others[: max_candidates - 1]]
            codes.sort()  # gold's position carries no information
            for lang in langs:
                r = per[lang]
                out.append(
                    FactPrompt(
                        fact_id,
                        lang,
                        relation,
                        r.cloze,
                        r.object,
                        tuple(r.aliases),
                        tuple(names[c][lang] for c in codes),
                        tuple(codes),
                    )
                )
    return out


def country_languages() -> dict[str, str]:
    """``{fact_id: ISO 639-1 code}``: the official language of each bundled fact's country.

    Read from the ``language`` relation's English object (e.g. "Spanish"), mapped to a code
    through ``interp.data.languages``; countries whose language polylens does not cover are left
    out.
    """
    by_name = {lang.name: code for code, lang in LANGUAGES.items()}
    country_lang = {
        r.subject_code: by_name[r.object]
        for r in load("facts", langs=["en"])
        if r.relation == "language" and r.object in by_name
    }
    return {
        r.id: country_lang[r.subject_code]
        for r in load("facts", langs=["en"])
        if r.subject_code in country_lang
    }


def _object_names(
    facts: list[dict], langs: Sequence[str]
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """``{object_code: {lang: name}}`` of a relation and the codes that may be competitors.

    Two object codes with the same name in some language could not be told apart there; of such
    codes only the first (in code order) is a competitor (every one stays a gold answer).
    """
    names: dict[str, dict[str, str]] = {}
    for per in facts:
        first = next(iter(per.values()))
        names.setdefault(first.object_code, {lang: per[lang].object for lang in langs})
    pool: list[str] = []
    taken: dict[str, set[str]] = {lang: set() for lang in langs}
    for code in sorted(names):
        if all(names[code][lang] not in taken[lang] for lang in langs):
            pool.append(code)
            for lang in langs:
                taken[lang].add(names[code][lang])
    return names, pool


def with_demonstrations(
    facts: Sequence[FactPrompt],
    n_demos: int,
    seed: int,
    *,
    pool: Sequence[FactPrompt] | None = None,
) -> list[FactPrompt]:
    """The same facts, each prompt preceded by ``n_demos`` solved facts of its relation.

    The demonstrations of a fact are drawn from the other fact ids of its relation in ``pool``
    (default: ``facts``) present in every language of ``facts``, with the seed and the fact id,
    so they are the same facts in every language and never the fact itself.
    """
    if n_demos < 0:
        raise PolylensError("n_demos must be >= 0")
    if n_demos == 0:
        return list(facts)
    source = list(facts if pool is None else pool)
    table = {(f.fact_id, f.lang): f for f in source}
    langs = sorted({f.lang for f in facts})
    ids: dict[str, list[str]] = {}
    for f in source:
        if all((f.fact_id, lang) in table for lang in langs):
            ids.setdefault(f.relation, [])
            if f.fact_id not in ids[f.relation]:
                ids[f.relation].append(f.fact_id)
    out = []
    for f in facts:
        others = sorted(i for i in ids.get(f.relation, []) if i != f.fact_id)
        if len(others) < n_demos:
            raise PolylensError(
                f"relation {f.relation!r} has {len(others) + 1} facts; {n_demos} demonstrations "
                "need at least one more than that (lower n_demos or add facts)"
            )
        demos = random.Random(f"{seed}:demos:{f.fact_id}").sample(others, n_demos)
        shots = [table[(d, f.lang)] for d in demos]
        lines = [s.prompt + continuation(s.prompt, s.answer, s.lang) for s in shots]
        out.append(replace(f, prompt="\n".join([*lines, f.prompt])))
    return out


def read_mlama_dir(directory: str | Path, langs: Sequence[str]) -> list[FactPrompt]:
    r"""Facts from ``<directory>/<lang>.tsv`` in the mLAMA shape (see the module docstring).

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
    first_lang = langs[0]
    first, first_path = tables[first_lang], paths[first_lang]
    for lang in langs[1:]:
        rows, path = tables[lang], paths[lang]
        if len(rows) != len(first):
            raise PolylensError(
                f"{path} has {len(rows)} rows but {first_path.name} has {len(first)}; row i must "
                "be the same fact in every language"
            )
        for a, b in zip(first, rows):
            if a.fact_id != b.fact_id:
                raise PolylensError(
                    f"{path}:{b.line} has id {b.fact_id!r} but {first_path.name}:{a.line} has "
                    f"{a.fact_id!r}; align the rows by fact"
                )
            if len(a.candidates) != len(b.candidates):
                raise PolylensError(
                    f"{path}:{b.line} has {len(b.candidates)} candidates but "
                    f"{first_path.name}:{a.line} has {len(a.candidates)}; candidate j must be the "
                    "same answer in every language"
                )
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


def _read_tsv(path: Path) -> list[_Row]:
    # Split on \n only (str.splitlines would also split on \v, \f, \x1c... inside a field) and
    # keep each line's number in the file: blank lines are skipped, not renumbered.
    numbered = [
        (i, line)
        for i, line in enumerate(split_lines(read_text_file(path, "facts file")), 1)
        if line.strip()
    ]
    if not numbered:
        raise PolylensError(
            f"facts file {path} is empty; give a header ({chr(9).join(TSV_COLUMNS)}) and one row "
            "per fact"
        )
    header = [name.strip() for name in numbered[0][1].split("\t")]
    missing = [c for c in TSV_COLUMNS if c not in header]
    if missing:
        raise PolylensError(
            f"facts file {path} lacks the column {missing[0]!r}; the header must name "
            f"{', '.join(TSV_COLUMNS)} (tab-separated)"
        )
    if len(numbered) == 1:
        raise PolylensError(
            f"facts file {path} has a header but no rows; add one row per fact below it"
        )
    column = {c: header.index(c) for c in TSV_COLUMNS}
    rows, seen = [], set()
    for i, line in numbered[1:]:
        where = f"{path}:{i}"
        fields = line.split("\t")
        values = {c: (fields[k] if k < len(fields) else "").strip() for c, k in column.items()}
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
