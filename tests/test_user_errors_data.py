"""Unit tier: every mistake in a user's data file is one line on stderr and exit code 2.

The readers of user files (mLAMA TSVs, parallel text, refusal JSON, YAML configs, prompt files,
model directories) each answer the same questions: an unreadable file, a UTF-8 byte-order mark,
blank lines, wrong counts, text longer than the model reads. Each case builds its bad input under
``tmp_path`` and runs ``experiments.cli.main`` in-process (``CASES``) or calls the reader itself
(``LIBRARY_CASES``). Cases marked ``early`` must fail before any model loads.
"""

import builtins
import os
from pathlib import Path

import pytest
import torch
import transformers.utils.logging
from test_user_errors import assert_mistake
from tiny import save_tiny

import experiments.base
import interp.model.models
from experiments.base import read_yaml_mapping
from interp.analysis.fact_files import read_polylens_tsv_dir
from interp.analysis.refusal import read_instruction_file
from interp.checks import read_text_file
from interp.data.user import read_parallel_dir
from interp.errors import PolylensError
from interp.extract import plan_extraction

HEADER = "id\trelation\tprompt\tanswer\tcandidates"
BOM = "\ufeff"
LONG = "x " * 1500  # 3001 tokens with BOS: more than a tiny llama's 2048 positions
_TINY: list[str] = []


def _tiny_dir() -> str:
    """A tiny random llama saved once per session (outside any test's tmp_path)."""
    if not _TINY:
        import tempfile

        _TINY.append(str(save_tiny("llama", Path(tempfile.mkdtemp(prefix="polylens-data-")))))
    return _TINY[0]


def _file(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8"))
    return path


def _unreadable(mp, path: Path) -> None:
    """Reads of ``path`` fail as under chmod 000 (which root, as in CI, ignores)."""
    path = Path(os.path.abspath(path))

    def denied(p):
        raise PermissionError(13, "Permission denied", str(p))

    for name in ("read_bytes", "read_text", "open"):
        original = getattr(Path, name)

        def patched(self, *args, _original=original, **kwargs):
            if Path(os.path.abspath(self)) == path:
                denied(self)
            return _original(self, *args, **kwargs)

        mp.setattr(Path, name, patched)
    original_open = builtins.open

    def patched_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(os.path.abspath(file)) == path:
            denied(file)
        return original_open(file, *args, **kwargs)

    mp.setattr(builtins, "open", patched_open)


def _row(i: int, candidates: str = "Paris|Rome", answer: str = "Paris") -> str:
    return f"f{i}\tcapital\tThe capital of X{i} is <mask>.\t{answer}\t{candidates}"


def _tsv(*lines: str) -> str:
    return "\n".join([HEADER, *lines]) + "\n"


def _facts(t: Path, files: dict, extra: str = "", model: bool = False) -> list[str]:
    """factual-consistency on the user's ``facts/<name>`` files, languages en and de."""
    for name, content in files.items():
        _file(t / "facts" / name, content)
    config = _file(t / "c.yaml", f"data: {t / 'facts'}\nlangs: [en, de]\n{extra}")
    argv = ["run", "factual-consistency", "--config", str(config)]
    return argv + (["--model", _tiny_dir()] if model else [])


def _good_facts(n: int = 2) -> str:
    return _tsv(*(_row(i) for i in range(n)))


def _parallel(t: Path, en: str, de: str, extra: str = "", model: bool = False) -> list[str]:
    """mid-layer-alignment on the user's ``par/en.txt`` and ``par/de.txt``."""
    _file(t / "par" / "en.txt", en)
    _file(t / "par" / "de.txt", de)
    config = _file(t / "c.yaml", f"parallel_dir: {t / 'par'}\nlangs: [en, de]\n{extra}")
    argv = ["run", "mid-layer-alignment", "--config", str(config)]
    return argv + (["--model", _tiny_dir()] if model else [])


def _safety(t: Path, mp=None, bom: bool = False, n: int = 40, long: bool = False) -> list[str]:
    """refusal-direction on the user's ``safety/{harmful,harmless}_<lang>.json``."""
    for kind in ("harmful", "harmless"):
        for lang in ("en", "de"):
            texts = [f"{kind} {i}" for i in range(n)]
            if long and (kind, lang) == ("harmful", "de"):
                texts[0] = LONG.strip()
            items = ",".join(f'{{"instruction": "{text}"}}' for text in texts)
            _file(t / "safety" / f"{kind}_{lang}.json", (BOM if bom else "") + f"[{items}]")
    if mp is not None:
        _unreadable(mp, t / "safety" / "harmful_en.json")
    config = _file(t / "c.yaml", f"data: {t / 'safety'}\nlangs: [en, de]\n")
    return ["run", "refusal-direction", "--config", str(config)]


def _model_dir(t: Path, mp, config: str | bytes = '{"model_type": "llama"}') -> list[str]:
    _file(t / "model" / "config.json", config)
    _file(t / "model" / "model.safetensors", b"x")
    prompts = _file(t / "p.txt", "hello\n")
    if mp is not None:
        _unreadable(mp, t / "model" / "config.json")
    return ["extract", "--model", str(t / "model"), "--prompts", str(prompts)]


def _unreadable_then(mp, path: Path, argv: list[str]) -> list[str]:
    _unreadable(mp, path)
    return argv


# (id, builder(tmp_path, monkeypatch) -> argv, expected part of the message, found before any
# model loads)
CASES = [
    # 1. read_polylens_tsv_dir's cross-file messages, with the data directory given as text (YAML).
    (
        "mlama-row-count",
        lambda t, mp: _facts(t, {"en.tsv": _good_facts(2), "de.tsv": _good_facts(1)}),
        "facts/de.tsv has 1 rows but ",
        True,
    ),
    (
        "mlama-id-mismatch",
        lambda t, mp: _facts(t, {"en.tsv": _good_facts(2), "de.tsv": _tsv(_row(0), _row(7))}),
        "facts/de.tsv:3 has id 'f7' but ",
        True,
    ),
    (
        "mlama-candidate-count",
        lambda t, mp: _facts(
            t, {"en.tsv": _good_facts(2), "de.tsv": _tsv(_row(0), _row(1, "Paris|Rome|Oslo"))}
        ),
        "facts/de.tsv:3 has 3 candidates but ",
        True,
    ),
    (
        "mlama-id-mismatch-real-lines",
        lambda t, mp: _facts(
            t, {"en.tsv": _good_facts(2), "de.tsv": _tsv("", _row(0), "", _row(7))}
        ),
        "facts/de.tsv:5 has id 'f7' but ",
        True,
    ),
    # 2. a header and no rows.
    (
        "mlama-header-only",
        lambda t, mp: _facts(t, {"en.tsv": _tsv(), "de.tsv": _tsv()}),
        "facts/en.tsv has a header but no rows",
        True,
    ),
    (
        "mlama-header-and-blank-lines",
        lambda t, mp: _facts(t, {"en.tsv": _tsv("", "  ", ""), "de.tsv": _tsv()}),
        "facts/en.tsv has a header but no rows",
        True,
    ),
    # 3. unreadable files (OSError): one line naming the file.
    (
        "refusal-json-unreadable",
        lambda t, mp: _safety(t, mp),
        "cannot read instruction file " + "{t}/safety/harmful_en.json: Permission denied",
        True,
    ),
    (
        "refusal-instruction-too-long",
        lambda t, mp: _safety(t, long=True) + ["--model", _tiny_dir()],
        "instruction 'x x x x x x x x x x x x x x x x x x x x '... (de), in its template and with "
        "max_new_tokens=",
        False,
    ),
    (
        "mlama-unreadable",
        lambda t, mp: _unreadable_then(
            mp,
            t / "facts" / "de.tsv",
            _facts(t, {"en.tsv": _good_facts(), "de.tsv": _good_facts()}),
        ),
        "cannot read facts file {t}/facts/de.tsv: Permission denied",
        True,
    ),
    (
        "parallel-unreadable",
        lambda t, mp: _unreadable_then(mp, t / "par" / "de.txt", _parallel(t, "a\nb\n", "a\nb\n")),
        "cannot read parallel file {t}/par/de.txt: Permission denied",
        True,
    ),
    (
        "config-unreadable",
        lambda t, mp: _unreadable_then(
            mp, t / "c.yaml", _parallel(t, "a\nb\n", "a\nb\n", "k: 1\n")
        ),
        "cannot read config file {t}/c.yaml: Permission denied",
        True,
    ),
    (
        "prompts-unreadable",
        lambda t, mp: _unreadable_then(
            mp, t / "p.txt", ["extract", "--prompts", str(_file(t / "p.txt", "hi\n"))]
        ),
        "cannot read prompt file {t}/p.txt: Permission denied",
        True,
    ),
    (
        "model-config-unreadable",
        lambda t, mp: _model_dir(t, mp),
        "cannot read model config {t}/model/config.json: Permission denied",
        False,
    ),
    (
        "gguf-unreadable",
        lambda t, mp: _unreadable_then(
            mp,
            t / "m.gguf",
            [
                "extract",
                "--model",
                str(_file(t / "m.gguf", b"GGUF")),
                "--prompts",
                str(_file(t / "p.txt", "hi\n")),
            ],
        ),
        "cannot read {t}/m.gguf: Permission denied",
        False,
    ),
    # 4. a UTF-8 byte-order mark is text, not part of the first column's name or sentence.
    (
        "mlama-bom-header",
        lambda t, mp: _facts(t, {"en.tsv": BOM + _good_facts(2), "de.tsv": _good_facts(1)}),
        "facts/de.tsv has 1 rows but ",
        True,
    ),
    (
        "refusal-json-bom",
        lambda t, mp: _safety(t, bom=True, n=3),
        "harmful_en.json has 3 instructions; the splits need at least",
        True,
    ),
    (
        "model-config-bom",
        lambda t, mp: _model_dir(t, None, BOM + '{"model_type": "llama"}'),
        "config.json starts with a UTF-8 byte-order mark",
        False,
    ),
    # 5. the file's real line numbers: blank lines skipped, not renumbered; lines split on \n.
    (
        "mlama-line-after-blank-lines",
        lambda t, mp: _facts(
            t,
            {"en.tsv": _tsv(_row(0), "", "", _row(1), _row(2, answer="")), "de.tsv": _tsv()},
        ),
        "facts/en.tsv:6 has an empty 'answer' field",
        True,
    ),
    (
        "mlama-vertical-tab-in-field",
        lambda t, mp: _facts(
            t,
            {
                "en.tsv": _tsv(
                    "f0\tcapital\tThe capital\vof X is <mask>.\tParis\tParis|Rome",
                    "",
                    _row(1, answer=""),
                ),
                "de.tsv": _tsv(),
            },
        ),
        "facts/en.tsv:4 has an empty 'answer' field",
        True,
    ),
    (
        "mlama-crlf-line",
        lambda t, mp: _facts(
            t, {"en.tsv": _tsv(_row(0), _row(1, answer="")).replace("\n", "\r\n"), "de.tsv": ""}
        ),
        "facts/en.tsv:3 has an empty 'answer' field",
        True,
    ),
    # 6. k of the ratio margin against the user's sentence count.
    (
        "parallel-fewer-sentences-than-k",
        lambda t, mp: _parallel(t, "Hello.\nGood night.\n", "Hallo.\nGute Nacht.\n"),
        "parallel directory {t}/par has 2 sentences per language; k=4 must be smaller",
        True,
    ),
    # 7. longer than the model reads: refused before any forward pass.
    (
        "parallel-sentence-too-long",
        lambda t, mp: _parallel(
            t, f"Hello.\n{LONG}\nYes.\n", "Hallo.\nNein.\nJa.\n", "k: 1\n", model=True
        ),
        "parallel file {t}/par/en.txt:2 is 3001 tokens long, more than the 2048",
        False,
    ),
    (
        "prompt-too-long",
        lambda t, mp: [
            "extract",
            "--model",
            _tiny_dir(),
            "--prompts",
            str(_file(t / "p.txt", f"hi\n\n{LONG}\n")),
        ],
        "p.txt:3 is 3001 tokens long, more than the 2048",  # its line, blank lines counted
        False,
    ),
    (
        "fact-too-long",
        lambda t, mp: _facts(
            t,
            {
                "en.tsv": _tsv(_row(0), f"f1\tcapital\t{LONG}<mask>.\tParis\tParis|Rome"),
                "de.tsv": _good_facts(2),
            },
            "n_demos: 0\nn_per_relation: null\n",
            model=True,
        ),
        "facts file {t}/facts/en.tsv: fact 'f1' (with its demonstrations and answer) is",
        False,
    ),
]


@pytest.mark.parametrize(
    ("builder", "message", "early"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_data_mistake_is_one_line_exit_2(builder, message, early, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # Model loads print transformers' progress bars on stderr; only polylens's own line counts.
    monkeypatch.setattr(transformers.utils.logging, "_tqdm_active", False)
    argv = builder(tmp_path, monkeypatch)
    capsys.readouterr()
    if early:
        for module in (
            interp.model.models,
            experiments.base,
        ):
            monkeypatch.setattr(module, "load_model", _refuse)
    assert_mistake(argv, message.format(t=tmp_path), tmp_path, capsys)


def _refuse(*args, **kwargs):
    raise AssertionError("a model was loaded before the mistake was reported")


@pytest.fixture(scope="module")
def tiny():
    return interp.model.models.load_model(_tiny_dir(), device="cpu")


# (id, call(tmp_path, monkeypatch, tiny model), expected part of the message): library readers.
LIBRARY_CASES = [
    (
        "plan-extraction-too-long",
        lambda t, mp, m: plan_extraction(m, ["hello", "Paris", LONG]),
        "prompt 2 is 3001 tokens long, more than the 2048 tokens",
    ),
    (
        "instruction-file-unreadable",
        lambda t, mp: read_instruction_file(
            _unreadable_then(mp, t / "i.json", _file(t / "i.json", "[]"))
        ),
        "cannot read instruction file {t}/i.json: Permission denied",
    ),
    (
        "read-text-file-bom-offset",
        lambda t, mp: read_text_file(_file(t / "p.txt", BOM.encode() + b"caf\xe9"), "prompt file"),
        "is not UTF-8 text (byte 0xe9 at offset 6)",
    ),
]


@pytest.mark.parametrize(
    ("call", "message"), [c[1:] for c in LIBRARY_CASES], ids=[c[0] for c in LIBRARY_CASES]
)
def test_library_reader_mistake_is_one_line(call, message, tmp_path, monkeypatch, request):
    args = (tmp_path, monkeypatch)
    if call.__code__.co_argcount == 3:
        args += (request.getfixturevalue("tiny"),)
    with pytest.raises(PolylensError) as info:
        call(*args)
    assert "\n" not in str(info.value)
    assert message.format(t=tmp_path) in str(info.value)


def test_readers_take_bom_crlf_and_control_characters(tmp_path):
    """What the readers must accept: a BOM, CRLF line ends, \\v and \\f inside a field."""
    assert read_text_file(_file(tmp_path / "a.txt", BOM + "hi\n"), "prompt file") == "hi\n"
    assert read_yaml_mapping(_file(tmp_path / "c.yaml", BOM + "k: 1\n")) == {"k": 1}
    _file(tmp_path / "f" / "en.tsv", BOM + _tsv(_row(0)).replace("\n", "\r\n"))
    de = "f0\tcapital\tDie\vHaupt\fstadt <mask>.\tParis\tParis|Rom"
    _file(tmp_path / "f" / "de.tsv", _tsv(de))
    facts = read_polylens_tsv_dir(str(tmp_path / "f"), ["en", "de"])
    assert [(f.fact_id, f.prompt) for f in facts] == [
        ("f0", "The capital of X0 is"),
        ("f0", "Die\vHaupt\fstadt"),
    ]
    assert facts[0].candidates == ("Paris", "Rome")
    _file(tmp_path / "p" / "en.txt", BOM + "Hello.\r\nGood\vnight.\r\n")
    _file(tmp_path / "p" / "de.txt", "Hallo.\nGute Nacht.")
    assert read_parallel_dir(tmp_path / "p", ["en", "de"])["en"] == ["Hello.", "Good\vnight."]
    _file(tmp_path / "i.json", BOM + '[{"instruction": "Say hi."}]')
    assert read_instruction_file(tmp_path / "i.json") == ["Say hi."]


def test_context_length(tiny):
    assert tiny.context_length == 2048  # LlamaConfig's max_position_embeddings
    tiny.check_context([2048, 5])  # at the limit: fine
    with pytest.raises(PolylensError, match="sentence 1 is 2049 tokens long"):
        tiny.check_context([5, 2049], "sentence {}".format)
