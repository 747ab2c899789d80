"""Facts to score from the bundled ``facts`` set, and few-shot prompts for any facts.

Every fact carries candidates that are parallel across languages: candidate j of a fact is the
same concept in every language (``FactPrompt.candidate_keys``), so rankings compare across
languages. Prompts are few-shot clozes: ``n_demos`` other facts of the same relation and language,
each completed with its answer on its own line, then the test fact's cloze. Demonstrations are
drawn per fact id with the seed, never the fact itself, and are the same facts in every language.
The user's own fact files (mLAMA, BMLAMA, polylens's TSV) are read by
``interp.analysis.fact_files``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from interp.analysis.factual import FactPrompt, continuation
from interp.data import load
from interp.data.languages import LANGUAGES
from interp.errors import PolylensError

__all__ = ["bundled_facts", "country_languages", "with_demonstrations"]


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


"""The earlier name of ``read_polylens_tsv_dir``, kept for its callers: it reads polylens's own
TSV, not mLAMA's published files (``read_mlama_jsonl_dir`` reads those)."""


# -- mLAMA --------------------------------------------------------------------------------------


# -- BMLAMA -------------------------------------------------------------------------------------
