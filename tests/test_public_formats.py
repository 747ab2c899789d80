"""Unit tier: the papers' public files as their repositories publish them.

Wendler et al.'s word lists (llm-latent-language's ``data/langs/<lang>/clean.csv``) for
latent-language and translation-barrier; FLORES+ and NTREX-128 parallel files for
mid-layer-alignment. Every file here is written by the test in the published layout, with rows of
its own; the records read must equal what was written, every malformed case is one line naming the
file, and each experiment runs once on a tiny random model with the user's data.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tiny import save_tiny

from experiments import run_experiment
from experiments.cli import main
from interp import PolylensError
from interp.data import Word
from interp.data.user import parallel_files, read_parallel, read_word_lists

BOM = "\ufeff"
# The columns of a published clean.csv (en/clean.csv adds `error`); polylens reads two of them.
HEADER = (
    "lang,word_original,word_translation,blank_prompt_original,blank_prompt_translation,"
    "blank_prompt_translation_masked"
)
# English word -> (French, German, Chinese); our own words.
WORDS = {
    "lamp": ("lampe", "Lampe", "灯"),
    "bread": ("pain", "Brot", "面包"),
    "chair": ("chaise", "Stuhl", "椅子"),
    "window": ("fenêtre", "Fenster", "窗户"),
    "apple": ("pomme", "Apfel", "苹果"),
    "river": ("rivière", "Fluss", "河"),
    "cheese": ("fromage", "Käse", "奶酪"),
}


def _write(path: Path, text: str | bytes, crlf: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        text = (text.replace("\n", "\r\n") if crlf else text).encode("utf-8")
    path.write_bytes(text)
    return path


def _row(lang: str, english: str, word: str) -> str:
    """One line of a clean.csv: quoted prompts with commas and doubled quotes, as pandas writes."""
    prompt = f'"Take the ""{english}"", then rest. Answer: ""{english}""."'
    masked = f'"Take the ""___"", then rest. Answer: ""{word}""."'
    return f'{lang},{english},{word},{prompt},"{word}, {word}!",{masked}'


def _word_lists(directory: Path, en: bool = False) -> Path:
    """fr (BOM, CRLF, one word no other list has), de (an `error` column, a word listed twice),
    zh; en/clean.csv only when asked."""
    fr = [_row("fr", e, f[0]) for e, f in WORDS.items()] + [_row("fr", "garden", "jardin")]
    _write(directory / "fr" / "clean.csv", BOM + "\n".join([HEADER, *fr]) + "\n", crlf=True)
    de = [_row("de", e, f[1]) + ",no error" for e, f in WORDS.items()]
    de.append(_row("de", "river", "Strom") + ",no error")
    _write(directory / "de" / "clean.csv", "\n".join([HEADER + ",error", *de, ""]) + "\n")
    zh = [_row("zh", e, f[2]) for e, f in WORDS.items()]
    _write(directory / "zh" / "clean.csv", "\n".join([HEADER, *zh]))
    if en:
        rows = [_row("en", e, e) + ",no error" for e in WORDS if e != "cheese"]
        _write(directory / "en" / "clean.csv", "\n".join([HEADER + ",error", *rows]) + "\n")
    return directory


def test_word_lists_read_as_published(tmp_path):
    words = _word_lists(tmp_path / "langs")
    records = read_word_lists(words, ["fr", "de", "en"])
    expected = []
    for english, (fr, de, _) in WORDS.items():
        forms = {"fr": (fr,), "de": ("Fluss", "Strom") if english == "river" else (de,)}
        forms["en"] = (english,)  # no en/clean.csv: English is word_original itself
        expected += [Word(f"word:{english}", lang, english, "user", forms[lang]) for lang in forms]
    assert records == expected  # "garden" is only in the French list: not aligned, left out


def test_english_list_is_read_where_published(tmp_path):
    words = _word_lists(tmp_path / "langs", en=True)
    records = read_word_lists(words, ["zh", "en"])
    assert [(r.lang, r.gloss, r.forms) for r in records[:2]] == [
        ("zh", "lamp", ("灯",)),
        ("en", "lamp", ("lamp",)),
    ]
    assert "cheese" not in {r.gloss for r in records}  # not in en/clean.csv


def _break(directory: Path, name: str) -> None:
    de = directory / "de" / "clean.csv"
    cases = {
        "missing-language": lambda: de.unlink(),
        "empty": lambda: _write(de, ""),
        "blank": lambda: _write(de, "\n  \n"),
        "header-only": lambda: _write(de, "word_original,word_translation\n"),
        "no-column": lambda: _write(de, "lang,word_original,translation\nde,lamp,Lampe\n"),
        "short-line": lambda: _write(de, "word_original,word_translation,x\nlamp,Lampe,1\nbread\n"),
        "empty-word": lambda: _write(de, "word_original,word_translation\nlamp, \n"),
        "bad-quote": lambda: _write(
            de, 'word_original,word_translation\nlamp,"Lampe\nbread,Brot\n'
        ),
        "not-utf8": lambda: _write(de, b"word_original,word_translation\nlamp,L\xe4mpe\n"),
        "nothing-in-common": lambda: _write(de, "word_original,word_translation\nsky,Himmel\n"),
    }
    cases[name]()


WORD_ERRORS = {
    "missing-language": "words directory {d} has no file de/clean.csv for language 'de'",
    "empty": "word list {d}/de/clean.csv is empty",
    "blank": "word list {d}/de/clean.csv is empty",
    "header-only": "word list {d}/de/clean.csv has a header but no words",
    "no-column": "word list {d}/de/clean.csv has no column 'word_translation' (its header: lang, "
    "word_original, translation)",
    "short-line": "word list {d}/de/clean.csv:3 has 1 field(s) but the header has 3",
    "empty-word": "word list {d}/de/clean.csv:2 has an empty word_translation",
    "bad-quote": "word list {d}/de/clean.csv:3 is not valid CSV (unexpected end of data)",
    "not-utf8": "word list {d}/de/clean.csv is not UTF-8 text (byte 0xe4",
    "nothing-in-common": "word list {d}/de/clean.csv has no English word (word_original) in "
    "common with the list(s) of fr under {d}",
}


@pytest.mark.parametrize("case", WORD_ERRORS)
def test_malformed_word_list_is_one_line(tmp_path, case):
    words = _word_lists(tmp_path / "langs")
    _break(words, case)
    with pytest.raises(PolylensError) as e:
        read_word_lists(words, ["fr", "de", "en"])
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(WORD_ERRORS[case].format(d=words)), message


def test_missing_words_directory(tmp_path):
    with pytest.raises(PolylensError, match="words directory .*nope does not exist"):
        read_word_lists(tmp_path / "nope", ["fr", "en"])


# --- parallel text ------------------------------------------------------------------------------

# Our own sentences, four per language; zh in both scripts (polylens's zh data is Hans).
SENTENCES = {
    "en": ["The train leaves at noon.", "My sister paints birds.", "Rain fell all night.", "Hi."],
    "fr": ["Le train part à midi.", "Ma sœur peint des oiseaux.", "Il a plu toute la nuit.", "Hé."],
    "de": ["Der Zug fährt mittags.", "Meine Schwester malt Vögel.", "Es regnete.", "Hallo."],
    "zh": ["火车中午出发。", "我姐姐画鸟。", "下了一夜的雨。", "你好。"],
    "zh-Hant": ["火車中午出發。", "我姐姐畫鳥。", "下了一夜的雨。", "你好。"],
    "ar": ["يغادر القطار ظهرا.", "أختي ترسم الطيور.", "أمطرت طوال الليل.", "مرحبا."],
    "ar-Latn": ["yughadir al-qitar.", "ukhti tarsum.", "amtarat.", "marhaban."],
    "sw": ["Treni inaondoka mchana.", "Dada yangu anachora ndege.", "Mvua ilinyesha.", "Jambo."],
}


def _lines(key: str) -> str:
    return "\n".join(SENTENCES[key]) + "\n"


def _flores(root: Path, name=lambda split, code: f"{split}.{code}") -> Path:
    """A FLORES+ release: dev/ and devtest/, files ``<split>.<code>_<Script>`` (or ``name``)."""
    codes = {
        "eng_Latn": "en",
        "fra_Latn": "fr",
        "cmn_Hans": "zh",
        "cmn_Hant": "zh-Hant",
        "yue_Hant": "zh-Hant",  # Cantonese: not zh
        "arb_Arab": "ar",
        "arb_Latn": "ar-Latn",
        "swh_Latn": "sw",
    }
    for code, key in codes.items():
        _write(root / "devtest" / name("devtest", code), _lines(key))
    for code in ("eng_Latn", "fra_Latn"):
        _write(root / "dev" / name("dev", code), f"dev {code} one\ndev {code} two\n")
    return root


def _ntrex(root: Path) -> Path:
    """An NTREX-128 checkout: NTREX-128/newstest2019-{src,ref}.<code>.txt, CRLF line ends."""
    files = {
        "src.eng": "en",
        "ref.eng-GB": "fr",  # a regional English reference: not the one read for en
        "ref.fra": "fr",
        "ref.fra-CA": "de",
        "ref.deu": "de",
        "ref.zho-CN": "zh",
        "ref.zho-TW": "zh-Hant",
        "ref.arb": "ar",
        "ref.swa": "sw",
        "ref.srp-Latn": "en",
    }
    for name, key in files.items():
        _write(root / "NTREX-128" / f"newstest2019-{name}.txt", _lines(key), crlf=True)
    _write(root / "NTREX-128" / "newstest2019-ref-2.fra.txt", _lines("de"), crlf=True)
    return root


def test_flores_plus_release(tmp_path):
    root = _flores(tmp_path / "floresp-v2.0")
    text = read_parallel(root, ["en", "fr", "zh", "ar", "sw"])
    assert text.layout == "FLORES+"
    assert {lang: p.name for lang, p in text.paths.items()} == {
        "en": "devtest.eng_Latn",
        "fr": "devtest.fra_Latn",
        "zh": "devtest.cmn_Hans",  # not cmn_Hant nor yue_Hant: polylens's zh is Hans
        "ar": "devtest.arb_Arab",  # not arb_Latn
        "sw": "devtest.swh_Latn",  # langcodes: swh is the Swahili of sw
    }
    assert text.sentences == {lang: SENTENCES[lang] for lang in ("en", "fr", "zh", "ar", "sw")}
    dev = read_parallel(root, ["en", "fr"], split="dev").sentences
    assert dev == {
        "en": ["dev eng_Latn one", "dev eng_Latn two"],
        "fr": ["dev fra_Latn one", "dev fra_Latn two"],
    }
    # The split folder itself works as well.
    assert read_parallel(root / "devtest", ["zh"]).sentences == {"zh": SENTENCES["zh"]}


@pytest.mark.parametrize(
    "name",
    [
        lambda split, code: f"{code}.{split}",  # FLORES-200's eng_Latn.devtest
        lambda split, code: code,  # no extension
        lambda split, code: f"{code}.txt",
    ],
    ids=["flores200", "bare", "txt"],
)
def test_flores_file_names(tmp_path, name):
    root = _flores(tmp_path / "flores", name)
    assert read_parallel(root, ["en", "zh"]).sentences == {
        "en": SENTENCES["en"],
        "zh": SENTENCES["zh"],
    }


def test_flores_split_files_side_by_side(tmp_path):
    """FLORES-200 names in one folder: the split picks its files."""
    flat = tmp_path / "flat"
    for lang, code in (("en", "eng_Latn"), ("fr", "fra_Latn")):
        _write(flat / f"{code}.devtest", _lines(lang))
        _write(flat / f"{code}.dev", f"{lang} dev\n")
    assert read_parallel(flat, ["en", "fr"]).sentences["fr"] == SENTENCES["fr"]
    assert read_parallel(flat, ["en", "fr"], split="dev").sentences == {
        "en": ["en dev"],
        "fr": ["fr dev"],
    }


def test_ntrex(tmp_path):
    root = _ntrex(tmp_path / "NTREX")
    for where in (root, root / "NTREX-128"):
        text = read_parallel(where, ["en", "fr", "de", "zh", "ar", "sw"])
        assert text.layout == "NTREX-128"
        assert {lang: p.name for lang, p in text.paths.items()} == {
            "en": "newstest2019-src.eng.txt",  # the English source, not eng-GB
            "fr": "newstest2019-ref.fra.txt",  # not fra-CA nor the second reference
            "de": "newstest2019-ref.deu.txt",
            "zh": "newstest2019-ref.zho-CN.txt",  # Hans, not zho-TW
            "ar": "newstest2019-ref.arb.txt",
            "sw": "newstest2019-ref.swa.txt",
        }
        # CRLF line ends read as plain lines.
        assert text.sentences == {lang: SENTENCES[lang] for lang in text.paths}


def test_polylens_layout_still_wins(tmp_path):
    root = _flores(tmp_path / "mixed")
    _write(root / "en.txt", "One.\nTwo.\n")
    _write(root / "fr.txt", "Un.\nDeux.\n")
    assert parallel_files(root, ["en", "fr"]) == (
        "polylens",
        {"en": root / "en.txt", "fr": root / "fr.txt"},
    )


def _parallel_error(tmp_path: Path, case: str) -> tuple[Path, list[str], str]:
    """Build one malformed directory: (directory, langs, split)."""
    root = tmp_path / case
    if case == "no-layout":
        _write(root / "notes.md", "hi\n")
        _write(root / "data.csv", "a,b\n")
        (root / "old").mkdir()
    elif case == "parquet":
        _write(root / "devtest" / "eng_Latn.parquet", b"PAR1")
        _write(root / "devtest" / "fra_Latn.parquet", b"PAR1")
    elif case == "ambiguous":
        _flores(root)
        _write(root / "devtest" / "devtest.zho_Hans", _lines("zh"))  # FLORES-200's tag beside
        return root, ["en", "zh"], "devtest"
    elif case == "flores-missing":
        _flores(root)
        return root, ["en", "de"], "devtest"
    elif case == "ntrex-missing":
        _ntrex(root)
        return root, ["en", "ru"], "devtest"
    elif case == "split-missing":
        _flores(root)
        for path in (root / "devtest").iterdir():
            path.unlink()
        (root / "devtest").rmdir()
    elif case == "line-count":
        _flores(root)
        _write(root / "devtest" / "devtest.fra_Latn", "Un.\nDeux.\nTrois.\n")
        return root, ["en", "fr"], "devtest"
    elif case == "empty-line":
        _ntrex(root)
        _write(root / "NTREX-128" / "newstest2019-ref.deu.txt", "Eins.\n\nDrei.\nVier.\n", True)
        return root, ["en", "de"], "devtest"
    elif case == "unknown-split":
        _flores(root)
        return root, ["en"], "test"
    return root, ["en", "fr"], "devtest"


PARALLEL_ERRORS = {
    "no-layout": "parallel directory {d} matches none of the layouts polylens reads: <lang>.txt "
    "per language (en.txt, fr.txt, ...), FLORES+ (dev/ or devtest/ holding devtest.eng_Latn-style"
    " files, or such files directly), NTREX-128 (newstest2019-ref.deu.txt, ...); it holds "
    "data.csv, notes.md, old/",
    "parquet": "parallel directory {d}/devtest matches none of the layouts polylens reads: "
    "<lang>.txt per language (en.txt, fr.txt, ...), FLORES+ (dev/ or devtest/ holding "
    "devtest.eng_Latn-style files, or such files directly), NTREX-128 (newstest2019-ref.deu.txt, "
    "...); it holds eng_Latn.parquet, fra_Latn.parquet (Parquet files, as the Hugging Face copy "
    "of FLORES+ has them, are not read",
    "ambiguous": "parallel directory {d}/devtest (FLORES+, split devtest) has several files for "
    "language 'zh' (devtest.cmn_Hans, devtest.zho_Hans) and polylens cannot tell which to read: "
    "it prefers the one in Hans script",
    "flores-missing": "parallel directory {d}/devtest (FLORES+, split devtest) has no file for "
    "language 'de' (German): looked for devtest.deu_Latn",
    "ntrex-missing": "parallel directory {d}/NTREX-128 (NTREX-128) has no file for language 'ru' "
    "(Russian): looked for newstest2019-ref.rus.txt",
    "split-missing": "parallel directory {d} has the FLORES+ split folder dev/ but no devtest/; "
    "set parallel_split: dev or add devtest/",
    "line-count": "parallel file {d}/devtest/devtest.fra_Latn has 3 lines but "
    "{d}/devtest/devtest.eng_Latn has 4",
    "empty-line": "parallel file {d}/NTREX-128/newstest2019-ref.deu.txt:2 is an empty line",
    "unknown-split": "unknown FLORES+ split 'test'; use dev or devtest",
}


@pytest.mark.parametrize("case", PARALLEL_ERRORS)
def test_malformed_parallel_directory_is_one_line(tmp_path, case):
    root, langs, split = _parallel_error(tmp_path, case)
    with pytest.raises(PolylensError) as e:
        read_parallel(root, langs, split)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(PARALLEL_ERRORS[case].format(d=root)), message


# --- the experiments on a tiny random model ----------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(save_tiny("llama", tmp_path_factory.mktemp("tiny-llama")))


def _rows(path: Path, table: str) -> list[dict]:
    return list(csv.DictReader((path / "tables" / f"{table}.csv").open(encoding="utf-8")))


TASK = dict(
    langs="fr,de", n_words=3, n_demos=2, repetition=False, drop_collisions=False, bootstrap=20
)


@pytest.mark.parametrize(
    ("name", "table"), [("latent-language", "words"), ("translation-barrier", "per_item")]
)
def test_translation_experiments_on_word_lists(tiny_dir, tmp_path, name, table):
    words = _word_lists(tmp_path / "langs")
    overrides = TASK | dict(model=tiny_dir, words_dir=str(words), out=str(tmp_path / "out"))
    path = run_experiment(name, None, overrides)
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["words"] == str(words) and metrics["n_items"] == 6  # 2 pairs x 3 words
    rows = _rows(path, table)
    assert len(rows) == 6
    col = {"fr": 0, "de": 1}
    for row in rows:  # every prompt's words are the user's, from their lists
        forms = WORDS[row["concept"]]
        assert row["source_word"] == forms[col[row["src"]]]
        assert row["target_word"] == forms[col[row["tgt"]]]
    assert "garden" not in {row["concept"] for row in rows}


def test_word_list_mistake_before_the_model_loads(tmp_path, capsys):
    words = _word_lists(tmp_path / "langs")
    _break(words, "no-column")
    config = _write(tmp_path / "c.yaml", f"words_dir: {words}\nlangs: [fr, de]\n")
    argv = ["run", "latent-language", "--config", str(config), "--model", str(tmp_path / "none")]
    assert main(argv + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"polylens: error: word list {words}/de/clean.csv has no column")
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_mid_layer_alignment_on_public_layouts(tiny_dir, tmp_path):
    """polylens, FLORES+ and NTREX-128 files with the same sentences give the same numbers."""
    langs = ["en", "fr", "zh"]
    own = tmp_path / "own"
    for lang in langs:
        _write(own / f"{lang}.txt", _lines(lang))
    hant = tmp_path / "hant"  # the Traditional decoy as polylens files: other sentences
    for lang in langs:
        _write(hant / f"{lang}.txt", _lines("zh-Hant" if lang == "zh" else lang))
    dirs = {
        "polylens": own,
        "FLORES+": _flores(tmp_path / "flores"),
        "NTREX-128": _ntrex(tmp_path / "ntrex"),
        "decoy": hant,
    }
    tables, metrics = {}, {}
    for layout, directory in dirs.items():
        overrides = dict(
            model=tiny_dir,
            langs=",".join(langs),
            parallel_dir=str(directory),
            poolings=["last"],
            k=1,
            out=str(tmp_path / "out" / layout),
        )
        path = run_experiment("mid-layer-alignment", None, overrides)
        tables[layout] = (path / "tables" / "per_layer_pair.csv").read_text()
        metrics[layout] = json.loads((path / "metrics.json").read_text())
    assert metrics["FLORES+"]["source"] == f"{dirs['FLORES+']} (FLORES+)"
    assert metrics["FLORES+"]["files"]["zh"] == str(
        dirs["FLORES+"] / "devtest" / "devtest.cmn_Hans"
    )
    assert metrics["NTREX-128"]["files"]["zh"].endswith("NTREX-128/newstest2019-ref.zho-CN.txt")
    assert all(m["n_sentences"] == 4 for m in metrics.values())
    assert tables["FLORES+"] == tables["polylens"] == tables["NTREX-128"]
    assert tables["decoy"] != tables["polylens"]  # the sentences read decide the numbers


def test_parallel_mistakes_through_the_cli(tmp_path, capsys):
    root = _flores(tmp_path / "flores")
    config = _write(
        tmp_path / "c.yaml", f"parallel_dir: {root}\nlangs: [en, de]\nparallel_split: devtest\n"
    )
    argv = ["run", "mid-layer-alignment", "--config", str(config), "--model", "none"]
    assert main(argv + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"polylens: error: parallel directory {root}/devtest (FLORES+, split ")
    assert "no file for language 'de' (German)" in err and err.count("\n") == 1
    with pytest.raises(PolylensError, match="parallel_split = 'test' is not valid"):
        run_experiment("mid-layer-alignment", None, {"parallel_split": "test"})
