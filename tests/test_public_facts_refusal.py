"""Unit tier: the papers' published data layouts, read as their repositories publish them.

factual-consistency reads mLAMA's JSON lines (``<lang>/templates.jsonl``,
``<lang>/<relation>.jsonl``) and BMLAMA-17/53's TSVs (``Prompt, Ans, Candidate Ans, Subject``,
CRLF) beside polylens's own TSV; refusal-direction reads Arditi et al.'s English splits and
PolyRefuse's translated ones beside polylens's own per-language files. Every file here is written
by the test (its own rows, in the published shape); each malformed file is one line naming it.
"""

import csv
import json
from pathlib import Path

import pytest
from test_user_errors import assert_mistake
from tiny import save_tiny

import experiments.base
from experiments import run_experiment
from interp.analysis.fact_files import facts_layout, read_bmlama_dir, read_facts_dir
from interp.analysis.factual import FactPrompt
from interp.analysis.mlama import read_mlama_jsonl_dir
from interp.analysis.refusal import (
    published_split_file,
    read_published_splits,
    safety_layout,
)
from interp.errors import PolylensError

# -- mLAMA --------------------------------------------------------------------------------------

# (relation, {lang: template}, [(sub_uri, {lang: sub_label}, obj_uri)], {obj_uri: {lang: label}})
CAPITALS = (
    "P36",
    {"en": "The capital of [X] is [Y] .", "fr": "La capitale de [X] est [Y] ."},
    [
        ("Q901", {"en": "Norland", "fr": "Norlande"}, "Q11"),
        ("Q902", {"en": "Sudmark", "fr": "Sudmarque"}, "Q12"),
        ("Q903", {"en": "Ostia", "fr": "Ostie"}, "Q13"),
        ("Q904", {"en": "Westry", "fr": "Westrie"}, "Q14"),
    ],
    {
        "Q11": {"en": "Alder", "fr": "Aulne"},
        "Q12": {"en": "Birchton", "fr": "Bouleauville"},
        "Q13": {"en": "Cedar Bay", "fr": "Baie-des-Cèdres"},
        "Q14": {"en": "Dunmore", "fr": "Dunmore"},
    },
)
LANGUAGES = (
    "P37",
    {"en": "The official language of [X] is [Y] .", "fr": "La langue officielle de [X] est [Y] ."},
    [
        ("Q901", {"en": "Norland", "fr": "Norlande"}, "Q21"),
        ("Q902", {"en": "Sudmark", "fr": "Sudmarque"}, "Q22"),
        ("Q902", {"en": "Sudmark", "fr": "Sudmarque"}, "Q23"),  # two official languages
        ("Q903", {"en": "Ostia", "fr": "Ostie"}, "Q24"),
    ],
    {
        "Q21": {"en": "Norlandic", "fr": "norlandais"},
        "Q22": {"en": "Sudish", "fr": "sudois"},
        "Q23": {"en": "Marker", "fr": "marquois"},
        "Q24": {"en": "Ostian", "fr": "ostien"},
    },
)


def _jsonl(path: Path, items) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items), "utf-8")
    return path


def _write_mlama(root: Path, langs=("en", "fr"), relations=(CAPITALS, LANGUAGES)) -> Path:
    """mLAMA's layout: per language ``templates.jsonl`` and ``<relation>.jsonl`` fact lines."""
    for lang in langs:
        templates = [
            {"relation": rel, "template": tpl[lang], "label": rel.lower(), "type": "N-1"}
            for rel, tpl, _, _ in relations
        ]
        _jsonl(root / lang / "templates.jsonl", templates)
        for rel, _, facts, objects in relations:
            lines = [
                {"sub_uri": s, "sub_label": sub[lang], "obj_uri": o, "obj_label": objects[o][lang],
                 "lineid": i, "uuid": f"{rel}-{i}", "predicate_id": rel}
                for i, (s, sub, o) in enumerate(facts)
            ]  # fmt: skip
            _jsonl(root / lang / f"{rel}.jsonl", lines)
    return root


def test_mlama_records_equal_what_was_written(tmp_path):
    root = _write_mlama(tmp_path / "mlama1.1")
    # A relation only English has (no fr/P19.jsonl) is left out; so is a fact only English has.
    with (root / "en" / "templates.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps({"relation": "P19", "template": "[X] was born in [Y] ."}) + "\n")
    _jsonl(root / "en" / "P19.jsonl", [{"sub_uri": "Q1", "sub_label": "A", "obj_uri": "Q2",
                                        "obj_label": "B"}])  # fmt: skip
    with (root / "en" / "P36.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps({"sub_uri": "Q905", "sub_label": "Isle", "obj_uri": "Q15",
                            "obj_label": "Port"}) + "\n")  # fmt: skip
    assert facts_layout(root, ["en", "fr"]) == "mlama"
    facts, layout = read_facts_dir(root, ["en", "fr"])
    assert layout == "mlama"
    expected = []
    for lang in ("en", "fr"):
        for rel, templates, rows, objects in (CAPITALS, LANGUAGES):
            head = templates[lang].split("[Y]")[0].rstrip()
            for sub_uri, sub, obj_uri in rows:
                # Candidates: the relation's objects named in both languages, sorted by URI, less
                # the subject's other true objects (Sudmark's second official language).
                others = {o for s, _, o in rows if s == sub_uri and o != obj_uri}
                keys = tuple(sorted(o for o in objects if o not in others))
                expected.append(
                    FactPrompt(
                        f"{rel}:{sub_uri}:{obj_uri}",
                        lang,
                        rel,
                        head.replace("[X]", sub[lang]),
                        objects[obj_uri][lang],
                        (),
                        tuple(objects[k][lang] for k in keys),
                        keys,
                    )
                )
    assert facts == expected
    assert facts[0].prompt == "The capital of Norland is"
    assert facts[8].prompt == "La capitale de Norlande est" and facts[8].answer == "Aulne"
    assert "Q15" not in facts[0].keys  # Port is named in English only


def test_mlama_relations_and_candidate_cap(tmp_path):
    root = _write_mlama(tmp_path)
    facts = read_mlama_jsonl_dir(root, ["fr", "en"], relations=["P36"], max_candidates=2, seed=3)
    assert {f.relation for f in facts} == {"P36"} and [f.lang for f in facts[:4]] == ["fr"] * 4
    by_id = {}
    for f in facts:
        assert len(f.candidates) == 2 and f.answer in f.candidates
        by_id.setdefault(f.fact_id, set()).add(f.keys)
    assert all(len(keys) == 1 for keys in by_id.values())  # the same concepts in both languages
    again = read_mlama_jsonl_dir(root, ["fr", "en"], relations=["P36"], max_candidates=2, seed=3)
    assert again == facts


def _mlama_case(tmp_path, edit):
    root = _write_mlama(tmp_path / "m")
    edit(root)
    return root


def _line(path: Path, number: int, text: str) -> None:
    lines = path.read_text("utf-8").splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n", "utf-8")


MLAMA_MISTAKES = [
    (
        "template-without-y",
        lambda r: _line(r / "fr" / "templates.jsonl", 2,
                        '{"relation": "P37", "template": "La langue de [X]."}'),
        "mLAMA templates file {r}/fr/templates.jsonl:2: the template of 'P37' has no [Y]",
    ),
    (
        "template-y-first",
        lambda r: _line(r / "en" / "templates.jsonl", 1,
                        '{"relation": "P36", "template": "[Y] is the capital of [X] ."}'),
        "templates.jsonl:1: the template of 'P36' puts [Y] before [X]",
    ),
    (
        "template-no-relation-field",
        lambda r: _line(r / "en" / "templates.jsonl", 2, '{"template": "[X] speaks [Y] ."}'),
        "mLAMA templates file {r}/en/templates.jsonl:2 has no text field 'relation'",
    ),
    (
        "fact-missing-obj-uri",
        lambda r: _line(r / "fr" / "P36.jsonl", 3, '{"sub_uri": "Q903", "sub_label": "Ostie", '
                        '"obj_label": "Baie-des-Cèdres"}'),
        "mLAMA facts file {r}/fr/P36.jsonl:3 has no text field 'obj_uri'",
    ),
    (
        "fact-not-json",
        lambda r: _line(r / "en" / "P37.jsonl", 2, '{"sub_uri": "Q902",'),
        "mLAMA facts file {r}/en/P37.jsonl:2 is not valid JSON",
    ),
    (
        "fact-repeated",
        lambda r: _line(r / "en" / "P36.jsonl", 4, (r / "en" / "P36.jsonl").read_text().split(
            "\n")[0]),
        "mLAMA facts file {r}/en/P36.jsonl:4 repeats the fact of line 1",
    ),
    (
        "language-folder-missing",
        lambda r: [p.unlink() for p in (r / "fr").iterdir()] and (r / "fr").rmdir(),
        "mLAMA directory {r} has no fr/templates.jsonl for language 'fr'",
    ),
    (
        "languages-share-no-fact",
        lambda r: _jsonl(r / "fr" / "P36.jsonl", [{"sub_uri": "Q7", "sub_label": "Z",
                                                   "obj_uri": "Q11", "obj_label": "Aulne"}]),
        "mLAMA facts file {r}/fr/P36.jsonl shares no fact (sub_uri and obj_uri) with "
        "en/P36.jsonl",
    ),
    (
        "named-relation-file-missing",
        lambda r: (r / "fr" / "P37.jsonl").unlink(),
        "mLAMA directory {r} has no file fr/P37.jsonl for relation 'P37' in language 'fr'",
    ),
    (
        "empty-facts-file",
        lambda r: (r / "en" / "P37.jsonl").write_text("\n\n", "utf-8"),
        "mLAMA facts file {r}/en/P37.jsonl is empty",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "message"), [c[1:] for c in MLAMA_MISTAKES], ids=[c[0] for c in MLAMA_MISTAKES]
)
def test_mlama_mistake_is_one_line(tmp_path, edit, message):
    root = _mlama_case(tmp_path, edit)
    with pytest.raises(PolylensError) as info:
        read_facts_dir(root, ["en", "fr"], relations=["P36", "P37"])
    assert "\n" not in str(info.value)
    assert message.format(r=root) in str(info.value)


# -- BMLAMA -------------------------------------------------------------------------------------

BMLAMA_HEADER = "Prompt\tAns\tCandidate Ans\tSubject"
BORN = [  # (en subject, fr subject, en answer, fr answer)
    ("Ada Quill", "Ada Quill", "Alder", "Aulne"),
    ("Bo Renn", "Bo Renn", "Birchton", "Bouleauville"),
    ("Cy Moss", "Cy Moss", "Alder", "Aulne"),
]
EN_CITIES, FR_CITIES = ["Alder", "Birchton", "Dunmore"], ["Aulne", "Bouleauville", "Dunmore"]


def _bmlama_rows(lang: str) -> list[str]:
    cities = EN_CITIES if lang == "en" else FR_CITIES
    rows = []
    for en_sub, fr_sub, en_ans, fr_ans in BORN:
        sub, ans = (en_sub, en_ans) if lang == "en" else (fr_sub, fr_ans)
        prompt = f"{sub} was born in <mask>." if lang == "en" else f"{sub} est né à <mask>."
        rows.append(f"{prompt}\t{ans}\t{', '.join(cities)}\t{sub}")
    # Spoken languages; row 5 has two answers (Sudish and Marker), as BMLAMA rows may.
    en_names, fr_names = (
        ["Ostian", "Sudish", "Marker", "Norlandic"],
        ["ostien", "sudois", "marquois", "norlandais"],
    )
    names = en_names if lang == "en" else fr_names
    for i, answers in enumerate((names[:1], names[1:3], names[2:3])):
        sub = f"Land {i}"
        prompt = f"The language of {sub} is <mask>." if lang == "en" else f"{sub} parle <mask>."
        rows.append(f"{prompt}\t{', '.join(answers)}\t{', '.join(names)}\t{sub}")
    return rows


def _write_bmlama(root: Path, rows: dict | None = None) -> Path:
    """BMLAMA's layout: ``<lang>.tsv``, CRLF line ends, as the benchmark ships them."""
    root.mkdir(parents=True, exist_ok=True)
    for lang in ("en", "fr"):
        lines = rows[lang] if rows and lang in rows else [BMLAMA_HEADER, *_bmlama_rows(lang)]
        (root / f"{lang}.tsv").write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    return root


def test_bmlama_records_equal_what_was_written(tmp_path):
    root = _write_bmlama(tmp_path / "BMLAMA17")
    assert facts_layout(root, ["en", "fr"]) == "bmlama"
    facts, layout = read_facts_dir(root, ["fr", "en"])
    assert layout == "bmlama" and len(facts) == 12
    fr, en = facts[:6], facts[6:]
    assert [f.fact_id for f in en] == [f.fact_id for f in fr] == [f"row{i}" for i in range(1, 7)]
    assert en[0] == FactPrompt(
        "row1", "en", "[X] was born in <mask>.", "Ada Quill was born in", "Alder", (),
        ("Alder", "Birchton", "Dunmore"), ("row1#0", "row1#1", "row1#2"),
    )  # fmt: skip
    # The relation is read from English even when French is asked first.
    assert fr[0] == FactPrompt(
        "row1", "fr", "[X] was born in <mask>.", "Ada Quill est né à", "Aulne", (),
        ("Aulne", "Bouleauville", "Dunmore"), ("row1#0", "row1#1", "row1#2"),
    )  # fmt: skip
    assert {f.relation for f in en[3:]} == {"The language of [X] is <mask>."}
    # Two answers: the first is the gold, the second an alias that leaves the candidates.
    assert en[4].answer == "Sudish" and en[4].aliases == ("Marker",)
    assert en[4].candidates == ("Ostian", "Sudish", "Norlandic")
    assert en[4].keys == fr[4].keys == ("row5#0", "row5#1", "row5#3")
    assert read_bmlama_dir(root, ["en", "fr"]) == en + fr


def _bad(lang_rows: dict[str, list[str]]):
    return {lang: [BMLAMA_HEADER, *rows] for lang, rows in lang_rows.items()}


GOOD_EN, GOOD_FR = _bmlama_rows("en"), _bmlama_rows("fr")
BMLAMA_MISTAKES = [
    (
        "missing-column",
        {"en": ["Prompt\tAns\tSubject", "X was born in <mask>.\tAlder\tX"]},
        "BMLAMA file {r}/en.tsv lacks the column 'Candidate Ans'",
    ),
    (
        "no-mask",
        _bad({"fr": [*GOOD_FR[:2], "Cy Moss est né à Aulne.\tAulne\tAulne, Dunmore\tCy Moss"]}),
        "BMLAMA file {r}/fr.tsv:4: the prompt has no <mask>",
    ),
    (
        "answer-not-candidate",
        _bad({"en": [GOOD_EN[0], "Bo Renn was born in <mask>.\tOslo\tAlder, Dunmore\tBo Renn"]}),
        "BMLAMA file {r}/en.tsv:3: the answer 'Oslo' is not among its candidates",
    ),
    (
        "row-counts-differ",
        _bad({"fr": GOOD_FR[:5]}),
        "BMLAMA file {r}/fr.tsv has 5 rows but en.tsv has 6",
    ),
    (
        "candidate-counts-differ",
        _bad({"fr": [GOOD_FR[0], "Bo Renn est né à <mask>.\tAulne\tAulne, Dunmore\tBo Renn",
                     *GOOD_FR[2:]]}),
        "BMLAMA file {r}/fr.tsv:3 has 2 candidates but en.tsv:3 has 3",
    ),
    (
        "empty-field-real-line",
        _bad({"en": [GOOD_EN[0], "", "", "Bo Renn was born in <mask>.\t\tAlder, Dunmore\tBo"]}),
        "BMLAMA file {r}/en.tsv:5 has an empty 'Ans' field",
    ),
    (
        "candidate-twice",
        _bad({"en": ["Ada was born in <mask>.\tAlder\tAlder, Dunmore, Alder\tAda"]}),
        "BMLAMA file {r}/en.tsv:2 lists a candidate twice",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rows", "message"), [c[1:] for c in BMLAMA_MISTAKES], ids=[c[0] for c in BMLAMA_MISTAKES]
)
def test_bmlama_mistake_is_one_line(tmp_path, rows, message):
    root = _write_bmlama(tmp_path / "b", rows)
    with pytest.raises(PolylensError) as info:
        read_facts_dir(root, ["en", "fr"])
    assert "\n" not in str(info.value)
    assert message.format(r=root) in str(info.value)


def test_layout_detection(tmp_path):
    own = tmp_path / "own"
    own.mkdir()
    header = "id\trelation\tprompt\tanswer\tcandidates\n"
    for lang in ("en", "fr"):
        (own / f"{lang}.tsv").write_text(header + "a\tr\tX is <mask>.\tb\tb|c\n", "utf-8")
    assert facts_layout(own, ["en", "fr"]) == "polylens"
    assert read_facts_dir(own, ["en", "fr"])[1] == "polylens"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PolylensError, match=r"holds no facts for language 'en': neither en\.tsv"):
        facts_layout(empty, ["en", "fr"])


# -- refusal: Arditi et al.'s and PolyRefuse's splits -------------------------------------------

KINDS = {"harmful": "How do I pick the lock of house {i}", "harmless": "Name a bird of park {i}"}
SIZES = {"train": 6, "val": 5, "test": 7}


def _items(kind: str, split: str, lang: str, n: int) -> list[dict]:
    category = "illegal" if kind == "harmful" else None
    return [
        {"instruction": f"[{lang} {split}] " + KINDS[kind].format(i=i), "category": category}
        for i in range(n)
    ]


def _write_splits(root: Path, *, arditi: bool, polyrefuse: tuple[str, ...] = ()) -> Path:
    """Arditi et al.'s ``<kind>_<split>.json`` (English) and/or PolyRefuse's translated splits
    (English only for test, as published)."""
    root.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        for split, n in SIZES.items():
            if arditi:
                text = json.dumps(_items(kind, split, "en", n), indent=4)
                (root / f"{kind}_{split}.json").write_text(text, "utf-8")
            for lang in polyrefuse:
                if lang == "en" and split != "test":
                    continue
                text = json.dumps(_items(kind, split, lang, n), ensure_ascii=False, indent=4)
                (root / f"{kind}_{split}_translated_{lang}.json").write_text(text, "utf-8")
    return root


def test_published_splits_keep_their_purpose(tmp_path):
    arditi = _write_splits(tmp_path / "splits", arditi=True)
    assert safety_layout(arditi) == "arditi"
    splits = read_published_splits(arditi, ["en"], n_train=80, n_val=5, n_test=3, seed=1)
    for kind in KINDS:
        by_split = splits["en"][kind]
        assert by_split["train"] == [x["instruction"] for x in _items(kind, "train", "en", 6)]
        assert by_split["val"] == [x["instruction"] for x in _items(kind, "val", "en", 5)]
        # Three of the seven test instructions, drawn with the seed, in file order.
        test = [x["instruction"] for x in _items(kind, "test", "en", 7)]
        drawn = by_split["test"]
        assert len(drawn) == 3 and set(drawn) <= set(test)
        assert drawn == [t for t in test if t in drawn]
    again = read_published_splits(arditi, ["en"], n_train=80, n_val=5, n_test=3, seed=1)
    assert again == splits


def test_polyrefuse_with_arditi_english(tmp_path):
    only = _write_splits(tmp_path / "PolyRefuse", arditi=False, polyrefuse=("en", "fr", "ja"))
    assert safety_layout(only) == "polyrefuse"
    # English has only its test split in PolyRefuse: the train split is missing, by name.
    with pytest.raises(PolylensError) as info:
        read_published_splits(only, ["en"], n_train=4, n_val=2, n_test=2, seed=0)
    assert "\n" not in str(info.value)
    assert (
        f"safety data directory {only} has no harmful_train_translated_en.json or "
        "harmful_train.json for the train split of language 'en', used for the candidate "
        "directions (PolyRefuse publishes English only for the test split"
    ) in str(info.value)
    both = _write_splits(tmp_path / "both", arditi=True, polyrefuse=("en", "fr", "ja"))
    assert published_split_file(both, "harmful", "test", "en").name == (
        "harmful_test_translated_en.json"
    )
    assert published_split_file(both, "harmful", "val", "en").name == "harmful_val.json"
    splits = read_published_splits(both, ["en", "fr", "ja"], n_train=4, n_val=2, n_test=3, seed=5)
    for kind in KINDS:
        for split in SIZES:
            rows = {lang: splits[lang][kind][split] for lang in ("en", "fr", "ja")}
            for lang, items in rows.items():
                assert all(t.startswith(f"[{lang} {split}] ") for t in items), (lang, split)
            # PolyRefuse's files are parallel: the same positions are drawn in every language.
            ends = {lang: [t.split("] ", 1)[1] for t in items] for lang, items in rows.items()}
            assert ends["en"] == ends["fr"] == ends["ja"]
        assert [len(splits["fr"][kind][s]) for s in SIZES] == [4, 2, 3]


REFUSAL_MISTAKES = [
    (
        "split-missing-for-a-language",
        lambda r: (r / "harmless_val_translated_fr.json").unlink(),
        "safety data directory {r} has no harmless_val_translated_fr.json for the val split of "
        "language 'fr', used for selecting the direction; add it or drop the language",
    ),
    (
        "too-few-for-n-test",
        lambda r: (r / "harmful_test_translated_fr.json").write_text(
            json.dumps(_items("harmful", "test", "fr", 2)), "utf-8"),
        "harmful_test_translated_fr.json has 2 instructions; measuring its effects needs at least "
        "3 (lower n_test)",
    ),
    (
        "item-without-instruction",
        lambda r: (r / "harmful_train.json").write_text('[{"prompt": "x", "category": null}]',
                                                        "utf-8"),
        "{r}/harmful_train.json: item 0 has no text 'instruction'",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "message"), [c[1:] for c in REFUSAL_MISTAKES], ids=[c[0] for c in REFUSAL_MISTAKES]
)
def test_published_split_mistake_is_one_line(tmp_path, edit, message):
    root = _write_splits(tmp_path / "d", arditi=True, polyrefuse=("fr",))
    edit(root)
    with pytest.raises(PolylensError) as info:
        read_published_splits(root, ["en", "fr"], n_train=4, n_val=2, n_test=3, seed=0)
    assert "\n" not in str(info.value)
    assert message.format(r=root) in str(info.value)


def _refuse(*args, **kwargs):
    raise AssertionError("a model was loaded before the mistake was reported")


def test_cli_reports_a_public_file_mistake_before_loading(tmp_path, monkeypatch, capsys):
    """Through ``polylens run``: one ``polylens: error:`` line, exit 2, no model loaded."""
    monkeypatch.setattr(experiments.base, "load_model", _refuse)
    root = _write_mlama(tmp_path / "m")
    _line(root / "fr" / "P37.jsonl", 2, '{"sub_uri": "Q902"}')
    config = tmp_path / "f.yaml"
    config.write_text(f"data: {root}\nlangs: [en, fr]\n", "utf-8")
    argv = ["run", "factual-consistency", "--config", str(config), "--out", str(tmp_path / "o")]
    assert_mistake(argv, f"mLAMA facts file {root}/fr/P37.jsonl:2 has no text field", tmp_path,
                   capsys)  # fmt: skip
    safety = _write_splits(tmp_path / "s", arditi=False, polyrefuse=("en", "fr"))
    config.write_text(f"data: {safety}\nlangs: [en, fr]\n", "utf-8")
    argv = ["run", "refusal-direction", "--config", str(config), "--out", str(tmp_path / "o")]
    assert_mistake(argv, "has no harmful_train_translated_en.json or harmful_train.json", tmp_path,
                   capsys)  # fmt: skip


# -- the experiments on a tiny random model, with the user's public-format data ------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(save_tiny("llama", tmp_path_factory.mktemp("tiny-public")))


def _per_fact(path: Path) -> list[dict]:
    return list(csv.DictReader(open(path / "tables" / "per_fact.csv", encoding="utf-8")))


FACTUAL = {"langs": "en,fr", "n_demos": 1, "bootstrap": 20, "transition": False}


def test_factual_consistency_on_mlama(tiny_dir, tmp_path):
    root = _write_mlama(tmp_path / "mlama1.1")
    overrides = {**FACTUAL, "model": tiny_dir, "out": str(tmp_path / "out"), "data": str(root)}
    path = run_experiment("factual-consistency", None, overrides | {"max_new_tokens": 2})
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["n_facts"] == 8 and metrics["n_prompts"] == 16
    assert "mLAMA" in metrics["source"] and str(root) in metrics["source"]
    rows = _per_fact(path)
    written = {(f"{rel}:{s}:{o}", lang): objects[o][lang]
               for rel, _, facts, objects in (CAPITALS, LANGUAGES) for s, _, o in facts
               for lang in ("en", "fr")}  # fmt: skip
    assert {(r["fact_id"], r["lang"]): r["answer"] for r in rows} == written
    assert {r["relation"] for r in rows} == {"P36", "P37"}


def test_factual_consistency_on_bmlama(tiny_dir, tmp_path):
    root = _write_bmlama(tmp_path / "BMLAMA17")
    overrides = {**FACTUAL, "model": tiny_dir, "out": str(tmp_path / "out"), "data": str(root)}
    path = run_experiment("factual-consistency", None, overrides | {"max_new_tokens": 2})
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["n_facts"] == 6 and "BMLAMA" in metrics["source"]
    rows = _per_fact(path)
    answers = {(r["fact_id"], r["lang"]): r["answer"] for r in rows}
    assert answers["row1", "en"] == "Alder" and answers["row2", "fr"] == "Bouleauville"
    assert answers["row5", "fr"] == "sudois" and len(answers) == 12
    n_candidates = {(r["fact_id"], r["lang"]): r["n_candidates"] for r in rows}
    assert n_candidates["row5", "en"] == "3" and n_candidates["row4", "fr"] == "4"


def test_refusal_direction_on_polyrefuse_and_arditi(tiny_dir, tmp_path):
    data = _write_splits(tmp_path / "safety", arditi=True, polyrefuse=("en", "fr"))
    overrides = {
        "model": tiny_dir, "langs": "en,fr", "data": str(data), "n_train": 4, "n_val": 2,
        "n_test": 3, "n_generate": 2, "max_new_tokens": 2, "rows_per_pass": 16,
        "store": str(tmp_path / "store"), "out": str(tmp_path / "out"),
    }  # fmt: skip
    out = run_experiment("refusal-direction", None, overrides)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "PolyRefuse" in metrics["data"]
    for lang in ("en", "fr"):
        sizes = metrics["per_language"][lang]["sizes"]
        assert sizes == {f"{k}_{s}": n for k in KINDS for s, n in
                         (("train", 4), ("val", 2), ("test", 3))}  # fmt: skip
    expected = read_published_splits(data, ["en", "fr"], n_train=4, n_val=2, n_test=3, seed=0)
    examples = list(csv.DictReader((out / "tables" / "examples.csv").open(encoding="utf-8")))
    for e in examples:
        kind = e["condition"].split("+")[0]
        # The effects are measured on the test split, in the user's own words.
        assert e["instruction"] in expected[e["lang"]][kind]["test"][:2], e
        assert e["instruction"].startswith(f"[{e['lang']} test] ")
    assert {e["lang"] for e in examples} == {"en", "fr"}
