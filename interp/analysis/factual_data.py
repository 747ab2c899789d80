"""Facts to score: the bundled ``facts`` set or the user's files, as ``FactPrompt``.

Every fact carries candidates that are parallel across languages: candidate j of a fact is the
same concept in every language (``FactPrompt.candidate_keys``), so rankings compare across
languages. Prompts are few-shot clozes: ``n_demos`` other facts of the same relation and language,
each completed with its answer on its own line, then the test fact's cloze. Demonstrations are
drawn per fact id with the seed, never the fact itself, and are the same facts in every language.

User data comes in three layouts, told apart by the files in the directory
(``facts_layout``; ``read_facts_dir`` reads whichever is there):

- **mLAMA** as Kassner et al. 2021 distribute it (``read_mlama_jsonl_dir``): one folder per
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
after it is dropped, since a causal model predicts the answer from what precedes it.
"""

from __future__ import annotations

import json
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
    "BMLAMA_COLUMNS",
    "LAYOUTS",
    "MLAMA_FIELDS",
    "TSV_COLUMNS",
    "bundled_facts",
    "country_languages",
    "fact_file",
    "facts_layout",
    "read_bmlama_dir",
    "read_facts_dir",
    "read_mlama_jsonl_dir",
    "read_polylens_tsv_dir",
    "with_demonstrations",
]

TSV_COLUMNS = ("id", "relation", "prompt", "answer", "candidates")
"""The columns of polylens's own facts TSV."""
BMLAMA_COLUMNS = ("Prompt", "Ans", "Candidate Ans", "Subject")
"""The columns of a BMLAMA-17/53 TSV."""
MLAMA_FIELDS = ("sub_uri", "sub_label", "obj_uri", "obj_label")
"""The fields of an mLAMA fact line that polylens reads (others are ignored)."""
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


"""The earlier name of ``read_polylens_tsv_dir``, kept for its callers: it reads polylens's own
TSV, not mLAMA's published files (``read_mlama_jsonl_dir`` reads those)."""

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


# -- mLAMA --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Triple:
    sub_uri: str
    sub_label: str
    obj_uri: str
    obj_label: str
    line: int


def read_mlama_jsonl_dir(
    directory: str | Path,
    langs: Sequence[str],
    *,
    relations: Sequence[str] | None = None,
    max_candidates: int | None = None,
    seed: int = 0,
) -> list[FactPrompt]:
    r"""Facts from mLAMA's files as published, one folder per language (module docstring).

    Each ``<directory>/<lang>`` holds ``templates.jsonl`` and one ``<relation>.jsonl`` per
    relation. The prompt of a fact is its language's template up to ``[Y]``, with ``[X]``
    replaced by the subject's label. The facts of a relation are those whose (``sub_uri``,
    ``obj_uri``) is in every language's file, in the first language's order; their id is
    ``<relation>:<sub_uri>:<obj_uri>``. Candidates are the gold object and the relation's other
    objects that have a label in every language (of two objects with the same label in some
    language only the first in URI order competes, and the subject's other true objects never
    do), drawn per fact id with the seed when ``max_candidates`` caps them, sorted by URI (the
    candidate keys).

    Files are UTF-8 (a byte-order mark is dropped), one JSON object per line, blank lines
    skipped; errors name the file and its real line number.

    Args:
        directory: mLAMA's top folder (``mlama1.1``), one folder per language.
        langs: the languages (ISO 639-1, as mLAMA's folders are named).
        relations: the relations to read (default: every relation of the first language's
            templates with a template and a facts file in every language).
        max_candidates: most candidates per fact, the gold included (default: all).
        seed: seed of the competitors' draw.

    Raises:
        PolylensError: one line for a missing directory, language folder, templates file or
            facts file of a chosen relation; a line that is not a JSON object or lacks a field
            (``relation`` and ``template``; ``sub_uri``, ``sub_label``, ``obj_uri``,
            ``obj_label``); a template without ``[X]`` or ``[Y]`` or with ``[Y]`` first; a
            repeated relation or fact; languages that share no fact of a chosen relation; a fact
            with no competitor.
    """
    if max_candidates is not None and max_candidates < 2:
        raise PolylensError("max_candidates must be at least 2 (the gold and one competitor)")
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise PolylensError(f"mLAMA directory {directory} does not exist or is not a directory")
    files = {}
    for lang in langs:
        files[lang] = directory / lang / "templates.jsonl"
        if not files[lang].is_file():
            raise PolylensError(
                f"mLAMA directory {directory} has no {lang}/templates.jsonl for language "
                f"{lang!r}; add the language's folder as mLAMA publishes it or drop it from langs"
            )
    templates = {lang: _read_templates(path) for lang, path in files.items()}

    def facts_path(lang: str, relation: str) -> Path:
        return directory / lang / f"{relation}.jsonl"

    if relations is None:
        chosen = [
            r
            for r in templates[langs[0]]
            if all(r in templates[lang] and facts_path(lang, r).is_file() for lang in langs)
        ]
        if not chosen:
            raise PolylensError(
                f"mLAMA directory {directory}: no relation has a template and a <relation>.jsonl "
                f"file in every language of {', '.join(langs)}; add them or choose other languages"
            )
    else:
        chosen = list(relations)
        for relation in chosen:
            for lang in langs:
                if relation not in templates[lang]:
                    raise PolylensError(
                        f"mLAMA templates file {files[lang]} has no template for relation "
                        f"{relation!r}; add it or drop the relation from relations"
                    )
                if not facts_path(lang, relation).is_file():
                    raise PolylensError(
                        f"mLAMA directory {directory} has no file {lang}/{relation}.jsonl for "
                        f"relation {relation!r} in language {lang!r}; add it or drop the relation "
                        "from relations"
                    )
    out: list[FactPrompt] = []
    for relation in chosen:
        clozes = {
            lang: _template_head(files[lang], relation, *templates[lang][relation])
            for lang in langs
        }
        triples = {lang: _read_triples(facts_path(lang, relation)) for lang in langs}
        out += _relation_facts(
            relation, langs, clozes, triples, facts_path, max_candidates, seed,
            strict=relations is not None,
        )  # fmt: skip
    if not out:
        raise PolylensError(
            f"mLAMA directory {directory}: no fact (sub_uri and obj_uri) is in every language of "
            f"{', '.join(langs)} for any relation; choose languages that share facts"
        )
    order = {lang: i for i, lang in enumerate(langs)}
    return sorted(out, key=lambda f: order[f.lang])


def _relation_facts(
    relation, langs, clozes, triples, facts_path, max_candidates, seed, *, strict
) -> list[FactPrompt]:
    """The facts of one mLAMA relation present in every language, with their candidates."""
    keys = {lang: {(t.sub_uri, t.obj_uri): t for t in triples[lang]} for lang in langs}
    shared = set(keys[langs[0]])
    for k, lang in enumerate(langs[1:], 1):
        shared &= set(keys[lang])
        if not shared:
            if not strict:
                return []
            before = ", ".join(f"{x}/{relation}.jsonl" for x in langs[:k])
            raise PolylensError(
                f"mLAMA facts file {facts_path(lang, relation)} shares no fact (sub_uri and "
                f"obj_uri) with {before}; a fact must be in every language (drop the relation "
                "from relations or the language from langs)"
            )
    names: dict[str, dict[str, str]] = {lang: {} for lang in langs}
    true_objects: dict[str, set[str]] = {}
    for lang in langs:
        for t in triples[lang]:
            names[lang].setdefault(t.obj_uri, t.obj_label)
            true_objects.setdefault(t.sub_uri, set()).add(t.obj_uri)
    pool: list[str] = []
    taken: dict[str, set[str]] = {lang: set() for lang in langs}
    for code in sorted(c for c in names[langs[0]] if all(c in names[lang] for lang in langs)):
        if all(names[lang][code] not in taken[lang] for lang in langs):
            pool.append(code)
            for lang in langs:
                taken[lang].add(names[lang][code])
    out = []
    for t in triples[langs[0]]:
        key = (t.sub_uri, t.obj_uri)
        if key not in shared:
            continue
        fact_id = f"{relation}:{t.sub_uri}:{t.obj_uri}"
        gold = t.obj_uri
        others = [
            code
            for code in pool
            if code not in true_objects[t.sub_uri]
            and all(names[lang][code] != names[lang][gold] for lang in langs)
        ]
        if max_candidates is not None:
            random.Random(f"{seed}:{fact_id}").shuffle(others)
            others = others[: max_candidates - 1]
        if not others:
            raise PolylensError(
                f"mLAMA facts file {facts_path(langs[0], relation)}:{t.line}: relation "
                f"{relation!r} has no other object named in every language to rank "
                f"{t.obj_label!r} against; drop the relation from relations"
            )
        codes = sorted([gold, *others])  # gold's position carries no information
        for lang in langs:
            fact = keys[lang][key]
            out.append(
                FactPrompt(
                    fact_id,
                    lang,
                    relation,
                    clozes[lang].replace("[X]", fact.sub_label),
                    names[lang][gold],
                    (),
                    tuple(names[lang][c] for c in codes),
                    tuple(codes),
                )
            )
    return out


def _json_lines(path: Path, what: str) -> list[tuple[int, dict]]:
    """``(line number, object)`` of every non-blank line of a JSON-lines file."""
    out = []
    for i, line in enumerate(split_lines(read_text_file(path, what)), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise PolylensError(
                f"{what} {path}:{i} is not valid JSON ({e.msg}); give one JSON object per line"
            ) from None
        if not isinstance(item, dict):
            raise PolylensError(
                f"{what} {path}:{i} holds a JSON {type(item).__name__}, not an object; give one "
                "JSON object per line"
            )
        out.append((i, item))
    if not out:
        raise PolylensError(f"{what} {path} is empty; give one JSON object per line")
    return out


def _text(item: dict, field: str, where: str, shape: str) -> str:
    value = item.get(field)
    if not isinstance(value, str) or not value.strip():
        raise PolylensError(f"{where} has no text field {field!r}; {shape}")
    return value.strip()


def _read_templates(path: Path) -> dict[str, tuple[str, int]]:
    """``{relation: (template, line)}`` of an mLAMA ``templates.jsonl``."""
    shape = 'each line is {"relation": "P19", "template": "[X] was born in [Y] ."}'
    out: dict[str, tuple[str, int]] = {}
    for i, item in _json_lines(path, "mLAMA templates file"):
        where = f"mLAMA templates file {path}:{i}"
        relation = _text(item, "relation", where, shape)
        if relation in out:
            raise PolylensError(
                f"{where} repeats the relation {relation!r} of line {out[relation][1]}; keep one "
                "template per relation"
            )
        out[relation] = (_text(item, "template", where, shape), i)
    return out


def _template_head(path: Path, relation: str, template: str, line: int) -> str:
    """The template up to ``[Y]`` (``[X]`` still in it): what the model reads before the answer."""
    where = f"mLAMA templates file {path}:{line}"
    for mark, role in (("[X]", "subject"), ("[Y]", "object")):
        if mark not in template:
            raise PolylensError(
                f"{where}: the template of {relation!r} has no {mark}; mark the {role} with {mark}"
            )
    head = template.split("[Y]", 1)[0]
    if "[X]" not in head:
        raise PolylensError(
            f"{where}: the template of {relation!r} puts [Y] before [X]; a causal model reads the "
            "subject before the answer, so leave the relation out of relations"
        )
    return head.rstrip()


def _read_triples(path: Path) -> list[_Triple]:
    """The facts of one mLAMA ``<relation>.jsonl``."""
    shape = "each line is one fact with " + ", ".join(MLAMA_FIELDS)
    out, seen = [], {}
    for i, item in _json_lines(path, "mLAMA facts file"):
        where = f"mLAMA facts file {path}:{i}"
        sub_uri, sub_label, obj_uri, obj_label = (
            _text(item, k, where, shape) for k in MLAMA_FIELDS
        )
        if (sub_uri, obj_uri) in seen:
            raise PolylensError(
                f"{where} repeats the fact of line {seen[sub_uri, obj_uri]} (sub_uri {sub_uri!r}, "
                f"obj_uri {obj_uri!r}); keep one line per fact"
            )
        seen[sub_uri, obj_uri] = i
        out.append(_Triple(sub_uri, sub_label, obj_uri, obj_label, i))
    return out


# -- BMLAMA -------------------------------------------------------------------------------------


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
    first, first_path = tables[langs[0]], paths[langs[0]]
    for lang in langs[1:]:
        rows, path = tables[lang], paths[lang]
        if len(rows) != len(first):
            raise PolylensError(
                f"BMLAMA file {path} has {len(rows)} rows but {first_path.name} has {len(first)}; "
                "row i must be the same fact in every language"
            )
        for a, b in zip(first, rows):
            if len(a.candidates) != len(b.candidates):
                raise PolylensError(
                    f"BMLAMA file {path}:{b.line} has {len(b.candidates)} candidates but "
                    f"{first_path.name}:{a.line} has {len(a.candidates)}; candidate j must be the "
                    "same answer in every language"
                )
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
    numbered = [
        (i, line)
        for i, line in enumerate(split_lines(read_text_file(path, "BMLAMA file")), 1)
        if line.strip()
    ]
    columns = ", ".join(BMLAMA_COLUMNS)
    if not numbered:
        raise PolylensError(
            f"BMLAMA file {path} is empty; give the header ({columns}, tab-separated) and one row "
            "per fact"
        )
    header = [name.strip() for name in numbered[0][1].split("\t")]
    missing = [c for c in BMLAMA_COLUMNS if c not in header]
    if missing:
        raise PolylensError(
            f"BMLAMA file {path} lacks the column {missing[0]!r}; the header must name {columns} "
            "(tab-separated)"
        )
    if len(numbered) == 1:
        raise PolylensError(
            f"BMLAMA file {path} has a header but no rows; add one row per fact below it"
        )
    column = {c: header.index(c) for c in BMLAMA_COLUMNS}
    rows = []
    for i, line in numbered[1:]:
        where = f"BMLAMA file {path}:{i}"
        fields = line.split("\t")
        values = {c: (fields[k] if k < len(fields) else "").strip() for c, k in column.items()}
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
