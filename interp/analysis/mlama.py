"""mLAMA's files as Kassner et al. 2021 distribute them, read as ``FactPrompt``s.

One folder per language: ``<lang>/templates.jsonl`` (JSON lines with ``relation`` and
``template``, the template holding ``[X]`` for the subject and ``[Y]`` for the object) and per
relation ``<lang>/<relation>.jsonl``, one TREx-style fact per line (``sub_uri``, ``sub_label``,
``obj_uri``, ``obj_label``, ...). A fact is the same in every language when its subject and object
URIs are; the facts of a relation are those present in every language. Candidates are the
relation's objects named in every language (the other objects of the same subject left out),
keyed by their URI. ``interp.analysis.fact_files`` tells this layout from the others.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from interp.analysis.factual import FactPrompt
from interp.checks import read_text_file, split_lines
from interp.errors import PolylensError

__all__ = ["MLAMA_FIELDS", "read_mlama_jsonl_dir"]


MLAMA_FIELDS = ("sub_uri", "sub_label", "obj_uri", "obj_label")
"""The fields of an mLAMA fact line that polylens reads (others are ignored)."""


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
