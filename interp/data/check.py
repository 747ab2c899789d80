"""Validate the bundled datasets: coverage, emptiness, duplicates, scripts, CLDR, templates."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

import babel
from babel import Locale
from babel.core import get_cldr_version

from interp.data import build_cldr
from interp.data.languages import LANGUAGES, foreign_letters
from interp.data.loader import DATASETS, covered_langs, read_items
from interp.data.templates import SLOT, TEMPLATES


@dataclass
class Report:
    """Violations found and the per-dataset, per-language item counts."""

    violations: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """Checks that were skipped, and why (never violations)."""

    @property
    def ok(self) -> bool:
        """No violation found."""
        return not self.violations

    def table(self) -> str:
        """The count table, datasets as rows and languages as columns."""
        langs = sorted(
            {lang for c in self.counts.values() for lang in c},
            key=lambda code: list(build_cldr.DEFAULT_LANGS).index(code),
        )
        lines = [f"{'dataset':10s}" + "".join(f"{lang:>6s}" for lang in langs)]
        for name, c in self.counts.items():
            lines.append(f"{name:10s}" + "".join(f"{c.get(lang, '-'):>6}" for lang in langs))
        return "\n".join(lines)


def _strings(name: str, item: dict, lang: str) -> list[tuple[str, str]]:
    """(field, text) of every string an item holds in ``lang``."""
    if name == "words":
        return [("forms", f) for f in item["forms"][lang]]
    if name == "facts":
        return [("subject", item["subject"][lang]), ("object", item["object"][lang])]
    if name == "boundary":
        return [("question", item["question"][lang])]
    return [("text", item["text"][lang])]


def _unique_key(name: str, item: dict, lang: str) -> str | None:
    """The string that must not repeat across items of a dataset (per language)."""
    if name == "words":
        return item["forms"][lang][0]
    if name == "facts":
        return None  # subjects repeat across relations by design; ids are unique instead
    return _strings(name, item, lang)[0][1]


def check_dataset(name: str, report: Report) -> None:
    """Coverage, empty/duplicate strings and scripts of one dataset."""
    items = read_items(name)
    lang_field = DATASETS[name].per_language_field
    claimed = {lang for item in items for lang in item[lang_field]}
    if set(covered_langs(name)) != claimed:
        for item in items:
            missing = sorted(lang for lang in claimed if lang not in item[lang_field])
            if missing:
                report.violations.append(f"{name} {item['id']}: missing languages {missing}")
    ids = Counter(it["id"] for it in items)
    report.violations += [f"{name}: duplicate id {i}" for i, n in ids.items() if n > 1]
    counts = {}
    for lang in covered_langs(name):
        seen: dict[str, str] = {}
        for item in items:
            for fld, text in _strings(name, item, lang):
                if not text or not text.strip():
                    report.violations.append(f"{name} {item['id']} [{lang}] {fld}: empty string")
                    continue
                bad = foreign_letters(text, lang)
                if bad:
                    report.violations.append(
                        f"{name} {item['id']} [{lang}] {fld}: {text!r} has letters outside "
                        f"the {lang} script: {''.join(bad[:5])!r}"
                    )
            key = _unique_key(name, item, lang)
            if key is not None:
                if key in seen:
                    report.violations.append(
                        f"{name} [{lang}]: {key!r} appears in both {seen[key]} and {item['id']}"
                    )
                seen[key] = item["id"]
        counts[lang] = len(items)
    report.counts[name] = counts


_SOURCE = re.compile(r"CLDR (\S+) via babel ([^;\s]+)")


def recorded_cldr(items: list[dict]) -> tuple[str, str]:
    """The (CLDR, babel) versions the CLDR-derived ``items`` were built from."""
    found = {m.groups() for it in items if (m := _SOURCE.match(it.get("source", "")))}
    if len(found) != 1:
        raise ValueError(f"facts.jsonl should record one CLDR source, found {sorted(found)}")
    return found.pop()


def check_cldr(report: Report) -> None:
    """CLDR-derived fields equal what babel returns, when babel has the CLDR they came from.

    A newer CLDR renames things (Swahili 'Poland' became 'Polandi' in CLDR 49), so comparing the
    bundled snapshot with another CLDR would fail whenever babel is upgraded: that comparison
    runs only against the recorded CLDR version, and is reported as skipped otherwise.
    """
    facts = read_items("facts")
    built_cldr, built_babel = recorded_cldr(facts)
    if get_cldr_version() != built_cldr:
        report.notes.append(
            f"CLDR fields not compared: the data was built from CLDR {built_cldr} (babel "
            f"{built_babel}), babel {babel.__version__} here has CLDR {get_cldr_version()}; "
            f"install babel=={built_babel} to compare, or `python -m interp.data.build_cldr` "
            "to rebuild from this CLDR"
        )
        return
    for item in facts:
        country, relation = item["subject_code"], item["relation"]
        for lang, subject in item["subject"].items():
            now = Locale.parse(lang).territories[country]
            if subject != now:
                report.violations.append(
                    f"facts {item['id']} [{lang}]: subject {subject!r} but CLDR now says {now!r}"
                )
            code, obj, _ = build_cldr.localize(relation, country, lang)
            if item["object"][lang] != obj or item["object_code"] != code:
                report.violations.append(
                    f"facts {item['id']} [{lang}]: object {item['object'][lang]!r} but CLDR "
                    f"now says {obj!r}"
                )
    known = build_cldr.cldr_names()
    for fake in build_cldr.fabricated_names():
        if fake.lower() in known:
            report.violations.append(f"boundary: invented name {fake!r} exists in CLDR")


def check_templates(report: Report) -> None:
    """Every template has exactly one subject slot, for every relation and language used."""
    for relation, by_lang in TEMPLATES.items():
        for lang, forms in by_lang.items():
            for form, template in forms.items():
                if template.count(SLOT) != 1:
                    report.violations.append(
                        f"template {relation}/{lang}/{form}: {template.count(SLOT)} subject "
                        "slots, need exactly one"
                    )
    langs = covered_langs("facts")
    for relation in {it["relation"] for it in read_items("facts")}:
        for lang in langs:
            if lang not in TEMPLATES.get(relation, {}):
                report.violations.append(f"template {relation}/{lang}: missing")


FREEFORM_KINDS = ("question", "continuation")
QUESTION_MARKS = {"zh": "？", "ja": "？", "ar": "؟"}
"""The mark a ``freeform`` question ends with where it is not ``?``."""
UNMARKED_QUESTIONS = ("th",)
"""Languages whose questions end with a question word (ไหม, อะไร, อย่างไร), not a mark."""
FREEFORM_EN_WORDS = {"question": (1, 15), "continuation": (3, 8)}
"""The shortest and longest English text of each kind, in words."""


def check_freeform(report: Report) -> None:
    """What the free-answer prompts need beyond ``check_dataset``.

    Every language, sequential ids, a known kind, questions ending with their language's mark
    (Spanish ones also holding ``¿``), continuations ending where the next word follows (no final
    punctuation, no space) and short English.
    """
    items = read_items("freeform")
    for lang in LANGUAGES:
        if not any(lang in item["text"] for item in items):
            report.violations.append(
                f"freeform: no item has [{lang}]; every item needs all {len(LANGUAGES)} languages"
            )
    for i, item in enumerate(items):
        where = f"freeform {item['id']}"
        if item["id"] != f"freeform:{i:02d}":
            report.violations.append(f"{where}: item {i} should have id freeform:{i:02d}")
        kind = item.get("kind")
        if kind not in FREEFORM_KINDS:
            report.violations.append(f"{where}: kind {kind!r}, not question or continuation")
            continue
        for lang, text in item["text"].items():
            if not text or not text.strip():
                continue  # check_dataset reports it
            if text != text.strip():
                report.violations.append(
                    f"{where} [{lang}] {kind}: {text!r} starts or ends with a space"
                )
            elif kind == "continuation" and unicodedata.category(text[-1]).startswith("P"):
                report.violations.append(
                    f"{where} [{lang}] continuation: {text!r} ends in punctuation {text[-1]!r}"
                )
            elif kind == "question" and lang not in UNMARKED_QUESTIONS:
                mark = QUESTION_MARKS.get(lang, "?")
                if not text.endswith(mark):
                    report.violations.append(
                        f"{where} [{lang}] question: {text!r} ends without {mark!r}"
                    )
                if lang == "es" and "¿" not in text:
                    report.violations.append(f"{where} [es] question: {text!r} has no '¿'")
        low, high = FREEFORM_EN_WORDS[kind]
        words = len(item["text"].get("en", "").split())
        if "en" in item["text"] and not low <= words <= high:
            report.violations.append(f"{where} [en] {kind}: {words} words, need {low} to {high}")


def check_all() -> Report:
    """Run every check on every dataset."""
    report = Report()
    for name in DATASETS:
        check_dataset(name, report)
    check_freeform(report)
    check_templates(report)
    check_cldr(report)
    return report
