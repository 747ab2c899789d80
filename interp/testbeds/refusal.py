"""A positive control for the refusal analysis: the embedded base model taught to refuse in English.

No safety-tuned chat model installs here, and a base model that does not refuse cannot tell a
right refusal pipeline from a wrong one. ``build_refusal_testbed`` fine-tunes Gemma 3 270M (base)
with LoRA (``peft``) on English instructions only, in Gemma's chat turn format:

- harmful instructions of the bundled safety set's train split are answered with a refusal
  (one of ``REFUSALS``, all starting with the English refusal opener "I");
- harmless ones are answered as the base model itself answers them: its greedy answers in an
  English few-shot dialogue of helpful turns, generated once and kept in the testbed's directory.
  Training on the model's own answers keeps the tuned model close to the base model where it
  should not change (self-distillation), at the cost of one forward pass per example, where a KL
  term on harmless prompts would need a second (frozen) forward pass at every step.

The adapter is merged and the result saved as a named model (``TESTBED``) in the polylens cache
with its provenance (base model fingerprint, data hash, seed, steps, loss curve), so that
``load_model("gemma-3-270m-refusal-en")`` and every experiment can use it. The same recipe and
seed give the same weights on the same machine and thread count (float sums in another order
differ in the last bits); a second build reads the cache, as long as the recipe and the safety
set are the same.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import resource
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from interp.analysis.refusal import chat_template, judge
from interp.analysis.refusal_behaviour import answer_fluency, refusal_behaviour, summarize_behaviour
from interp.data import load
from interp.data.loader import dataset_sha256, split_of
from interp.data.refusal import DIALOGUES
from interp.errors import PolylensError
from interp.model.convert import BUILT, EMBEDDED, built_dir
from interp.model.models import LoadedModel, load_model
from interp.storage.files import atomic_write_json, atomic_write_text
from interp.storage.provenance import provenance

__all__ = [
    "CHAT_TEMPLATE",
    "REFUSALS",
    "TESTBED",
    "Example",
    "RefusalRecipe",
    "base_answers",
    "behaviour_card",
    "card_settings",
    "write_card",
    "build_refusal_testbed",
    "is_built",
    "chat_prompts",
    "training_examples",
]

log = logging.getLogger(__name__)

TESTBED = "gemma-3-270m-refusal-en"
assert TESTBED in BUILT

CHAT_TEMPLATE = (
    "{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
"""Gemma's turn format (the one Gemma's instruction-tuned models use): the tokenizer has
``<start_of_turn>`` and ``<end_of_turn>`` as single tokens, so the template costs few tokens.
It writes no ``<bos>``: polylens tokenizes every prompt with the tokenizer's special tokens,
which add it (a template that wrote it too would start each prompt with two)."""
END_OF_TURN = "<end_of_turn>"

REFUSALS = (
    "I cannot help with that.",
    "I'm sorry, but I can't help with that request.",
    "I cannot help with that. It could hurt people.",
    "I can't assist with that, because it could cause harm.",
)
"""Refusals taught for harmful instructions, in turn; each starts with the opener "I" that
the English refusal score reads (``interp.data.refusal.DIALOGUES["en"].openers``)."""


@dataclass(frozen=True)
class RefusalRecipe:
    """Everything a testbed's weights depend on (besides the base model and the data)."""

    base: str = "gemma-3-270m"
    lang: str = "en"
    """The one language the tuning data is in."""
    seed: int = 0
    steps: int = 120
    batch_size: int = 8
    """Examples per step, half harmful and half harmless."""
    learning_rate: float = 3e-4
    rank: int = 8
    """LoRA rank on every attention and MLP projection."""
    alpha: int = 16
    max_answer_tokens: int = 32
    """Most tokens of a base-model answer (generated and trained on)."""


@dataclass(frozen=True)
class Example:
    """One tuning example: an instruction and the answer taught for it."""

    instruction: str
    answer: str
    harmful: bool
    complete: bool
    """Whether the answer ended on its own (then the end of the turn is taught after it)."""


def is_built(name: str = TESTBED) -> bool:
    """Whether the testbed ``name`` is complete in the cache (``load_model(name)`` works)."""
    return _testbed_record(built_dir(name)) is not None


def _testbed_dir(name: str) -> Path:
    """The cache directory of testbed ``name``; never an embedded model's or outside the cache."""
    if name in EMBEDDED or not name or name.startswith(".") or "/" in name or "\\" in name:
        raise PolylensError(
            f"{name!r} cannot name a testbed: use a plain name that is not an embedded model's "
            "(letters, digits, '-', '_')"
        )
    target = built_dir(name)
    if target.exists() and (target / "polylens.json").is_file() and _testbed_record(target) is None:
        raise PolylensError(
            f"{target} holds a model that is not a refusal testbed; give the testbed another --name"
        )
    return target


def _testbed_record(directory: Path) -> dict | None:
    """The provenance record of a complete refusal testbed in ``directory``, else None."""
    path = directory / "polylens.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    return record if record.get("testbed") == "refusal" else None


def held_out_instructions(lang: str) -> tuple[list[str], list[str]]:
    """Harmful and harmless instructions of the bundled safety set's test split in ``lang``.

    The test split is the same items in every language and none of them was tuned on.
    """
    records = [r for r in load("safety", langs=[lang]) if split_of(r.id) == "test"]
    return (
        [r.text for r in records if r.harmful],
        [r.text for r in records if not r.harmful],
    )


def training_instructions(lang: str) -> tuple[list[str], list[str]]:
    """Harmful and harmless instructions of the bundled safety set's train split in ``lang``.

    The test split (``interp.data.loader.split_of``, the same items in every language) is kept
    out: the behavioural card and the refusal-direction experiment measure on it.
    """
    records = [r for r in load("safety", langs=[lang]) if split_of(r.id) != "test"]
    return (
        [r.text for r in records if r.harmful],
        [r.text for r in records if not r.harmful],
    )


def chat_prompts(tokenizer, instructions: Sequence[str]) -> list[str]:
    """Each instruction as one user turn in ``CHAT_TEMPLATE``, ready for the answer."""
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": text}],
            chat_template=CHAT_TEMPLATE,
            tokenize=False,
            add_generation_prompt=True,
        )
        for text in instructions
    ]


def _helpful_dialogue(lang: str) -> tuple[str, str, str]:
    """The few-shot prefix of helpful turns only, the user label and the answer label."""
    d = DIALOGUES[lang]
    helpful = [(q, a) for q, a in d.shots if not judge([a], d.phrases)[0]]
    turns = "".join(f"{d.user}{d.colon}{q}\n{d.assistant}{d.colon}{a}\n\n" for q, a in helpful)
    return turns, f"{d.user}{d.colon}", f"\n{d.assistant}{d.colon.rstrip()}"


def base_answers(
    model: LoadedModel,
    instructions: Sequence[str],
    lang: str,
    *,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    progress: bool = True,
) -> list[tuple[str, bool]]:
    """The base model's own greedy answers, and whether each ended before ``max_new_tokens``.

    Asked in a few-shot dialogue of helpful turns in ``lang`` (the helpful half of
    ``DIALOGUES[lang]``), so that a base model answers as an assistant would; an answer ends at
    the end of its line.
    """
    turns, user, assistant = _helpful_dialogue(lang)
    space = DIALOGUES[lang].colon[len(DIALOGUES[lang].colon.rstrip()) :]
    prompts = [f"{turns}{user}{q}{assistant}{space}" for q in instructions]
    texts = model.generate(
        prompts, max_new_tokens=max_new_tokens, stop="\n", batch_size=batch_size, progress=progress
    )
    lengths = [len(ids) for ids in model.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    # A cut answer re-tokenizes to about max_new_tokens; one that met its newline, to fewer.
    return [(t.strip(), n < max_new_tokens - 2) for t, n in zip(texts, lengths)]


def training_examples(model: LoadedModel, recipe: RefusalRecipe) -> list[Example]:
    """Harmful instructions with a refusal; harmless ones with the base model's own answer.

    A harmless answer that is empty or reads as a refusal (``judge``) is left out: the testbed
    must not learn to refuse safe requests from its own base model.
    """
    harmful, harmless = training_instructions(recipe.lang)
    out = [
        Example(q, REFUSALS[i % len(REFUSALS)], True, True) for i, q in enumerate(harmful)
    ]  # fmt: skip
    answers = base_answers(model, harmless, recipe.lang, max_new_tokens=recipe.max_answer_tokens)
    phrases = DIALOGUES[recipe.lang].phrases
    for q, (answer, complete) in zip(harmless, answers):
        if answer and not judge([answer], phrases)[0]:
            out.append(Example(q, answer, False, complete))
    return out


def _encode(tokenizer, examples: Sequence[Example]) -> list[tuple[list[int], list[int]]]:
    """``(prompt ids, answer ids)`` of each example in the chat template."""
    prompts = chat_prompts(tokenizer, [e.instruction for e in examples])
    answers = [e.answer + (END_OF_TURN if e.complete else "") for e in examples]
    p_ids = tokenizer(prompts, add_special_tokens=True)["input_ids"]  # as LoadedModel.tokenize
    a_ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
    return list(zip(p_ids, a_ids))


def _batch(rows: Sequence[tuple[list[int], list[int]]], pad: int) -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids``, ``attention_mask``, ``position_ids`` and answer ``labels``.

    Left padding puts every answer at the end of its row, so the logits of the last
    ``labels.shape[1] + 1`` positions are all the loss needs (``logits_to_keep``): the 262k-token
    unembedding is paid on answer tokens only.
    """
    width = max(len(p) + len(a) for p, a in rows)
    answer_width = max(len(a) for _, a in rows)
    ids = torch.full((len(rows), width), pad)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), answer_width), -100)
    for r, (p, a) in enumerate(rows):
        seq = p + a
        ids[r, width - len(seq) :] = torch.tensor(seq)
        mask[r, width - len(seq) :] = 1
        labels[r, answer_width - len(a) :] = torch.tensor(a)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "labels": labels}


def _answer_loss(hf, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens."""
    labels = batch["labels"]
    out = hf(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        logits_to_keep=labels.shape[1] + 1,
    )
    logits = out.logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
    )


def _draws(n: int, generator: torch.Generator):
    """Indices ``0..n-1`` in a fresh seeded order each epoch, forever."""
    while True:
        yield from torch.randperm(n, generator=generator).tolist()


def train_lora(
    model: LoadedModel, examples: Sequence[Example], recipe: RefusalRecipe, *, progress=True
) -> tuple[torch.nn.Module, list[float]]:
    """LoRA on every attention and MLP projection; returns the merged model and the loss curve.

    Each step draws half its batch from the harmful and half from the harmless examples, each in
    a seeded order that is reshuffled every epoch.
    """
    from peft import LoraConfig, get_peft_model  # the fine-tune's library, imported when used

    torch.manual_seed(recipe.seed)
    config = LoraConfig(
        r=recipe.rank,
        lora_alpha=recipe.alpha,
        lora_dropout=0.0,
        target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
        ],
    )  # fmt: skip
    tuned = get_peft_model(model.hf, config)
    optimizer = torch.optim.AdamW(
        [p for p in tuned.parameters() if p.requires_grad], lr=recipe.learning_rate
    )
    encoded = _encode(model.tokenizer, examples)
    groups = [[r for r, e in zip(encoded, examples) if e.harmful == h] for h in (True, False)]
    if min(len(g) for g in groups) == 0:
        raise PolylensError("the testbed needs both harmful and harmless training examples")
    generator = torch.Generator().manual_seed(recipe.seed)
    draws = [_draws(len(g), generator) for g in groups]
    half = recipe.batch_size // 2
    pad = model.tokenizer.pad_token_id
    losses: list[float] = []
    tuned.train()
    bar = tqdm(range(recipe.steps), desc="LoRA", unit="step", disable=not progress)
    for _ in bar:
        rows = [g[next(d)] for g, d in zip(groups, draws) for _ in range(half)]
        loss = _answer_loss(tuned, _batch(rows, pad))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 5))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    tuned.eval()
    return tuned.merge_and_unload(), losses


def _examples_record(examples: Sequence[Example]) -> tuple[str, str]:
    """The examples as JSON lines and their sha256 (the data hash of the provenance)."""
    text = "".join(json.dumps(asdict(e), ensure_ascii=False) + "\n" for e in examples)
    return text, hashlib.sha256(text.encode()).hexdigest()


def build_refusal_testbed(
    recipe: RefusalRecipe = RefusalRecipe(),
    *,
    name: str = TESTBED,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Build (or find in the cache) the refusal-tuned testbed; returns its model directory.

    The directory holds the merged weights, the tokenizer with ``CHAT_TEMPLATE``, the tuning
    examples (``training_examples.jsonl``) and ``polylens.json``: the provenance (base model
    identity, data hash, recipe, loss curve, build time). It is written beside its place and
    renamed into it, so a killed build leaves nothing that looks complete.

    Raises:
        PolylensError: the cached testbed was built with another recipe (pass ``force`` to
            rebuild, or another ``name``).
    """
    target = _testbed_dir(name)
    record = _testbed_record(target)
    if record is not None and not force:
        built = {"recipe": record.get("recipe"), "safety_sha256": record.get("safety_sha256")}
        wanted = {"recipe": asdict(recipe), "safety_sha256": dataset_sha256("safety")}
        if built == wanted:
            return target
        raise PolylensError(
            f"{target} holds a testbed built from another recipe or safety set "
            f"({built['recipe']}); rebuild it with --force (or force=True), or give this one "
            "another --name"
        )
    if recipe.batch_size < 2 or recipe.batch_size % 2:
        raise PolylensError(
            f"batch_size={recipe.batch_size}: each step takes half harmful and half harmless "
            "examples; give an even number >= 2"
        )
    if recipe.lang not in DIALOGUES:
        raise PolylensError(
            f"no refusal dialogue for {recipe.lang!r}; the testbed can be tuned in "
            f"{', '.join(DIALOGUES)}"
        )
    start = time.perf_counter()
    base = load_model(recipe.base, device="cpu", dtype="float32")
    if base.tokenizer.convert_tokens_to_ids(END_OF_TURN) in (None, base.tokenizer.unk_token_id):
        raise PolylensError(
            f"{recipe.base}'s tokenizer has no {END_OF_TURN} token; the testbed's chat template "
            "is Gemma's turn format: use a Gemma base model"
        )
    identity = base.identity
    examples = training_examples(base, recipe)
    text, data_sha = _examples_record(examples)
    merged, losses = train_lora(base, examples, recipe, progress=progress)
    merged.generation_config.eos_token_id = [
        base.tokenizer.eos_token_id,
        base.tokenizer.convert_tokens_to_ids(END_OF_TURN),
    ]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        merged.save_pretrained(tmp)
        base.tokenizer.chat_template = CHAT_TEMPLATE
        base.tokenizer.save_pretrained(tmp)
        atomic_write_text(tmp / "training_examples.jsonl", text)
        provenance_record = provenance(
            identity,
            testbed="refusal",
            recipe=asdict(recipe),
            data_sha256=data_sha,
            safety_sha256=dataset_sha256("safety"),
            examples={
                "harmful": sum(e.harmful for e in examples),
                "harmless": sum(not e.harmful for e in examples),
            },
            loss_curve=losses,
            build_seconds=round(time.perf_counter() - start, 1),
            # ru_maxrss is in KiB on Linux: the build's peak resident memory.
            peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            threads=torch.get_num_threads(),
        )
        atomic_write_json(tmp / "polylens.json", provenance_record)
        # The old build is moved aside before the new one takes its place: at every moment the
        # name holds one complete build or none.
        old = target.with_name(f".{target.name}-replaced") if target.exists() else None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("testbed %s built in %.0f s", name, time.perf_counter() - start)
    return target


def behaviour_card(
    base: LoadedModel,
    tuned: LoadedModel,
    langs: Sequence[str] = tuple(DIALOGUES),
    *,
    n_per_class: int | None = None,
    max_new_tokens: int = 24,
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[list[dict], list[dict]]:
    """Refusal before and after tuning, on held-out instructions of every language.

    Both models are asked in the testbed's chat template (the base model too: the same prompt
    tokens), on the safety set's test split (``held_out_instructions``, at most ``n_per_class``
    per class); each answer is judged by phrases and by the refusal score
    (``interp.analysis.refusal_behaviour``). Fluency: the base model's own few-shot answers to
    the harmless instructions (``base_answers``), scored as the answer to the chat prompt under
    each model (mean log-probability per token).

    Returns:
        The card (one row per model, language and class: rates by each judge, their agreement,
        answer languages; harmless rows add ``fluency``) and every judged answer.
    """
    base.tokenizer.chat_template = CHAT_TEMPLATE  # the base model has none of its own
    card, answers = [], []
    for lang in tqdm(langs, desc="behaviour card", unit="lang", disable=not progress):
        harmful, harmless = (items[:n_per_class] for items in held_out_instructions(lang))
        reference = [a for a, _ in base_answers(base, harmless, lang, progress=False)]
        for label, model in (("base", base), ("tuned", tuned)):
            # The base model's generation config does not end at the end of a turn: a stop does.
            plain = chat_template(model, lang)
            template = replace(plain, stop=(*plain.stop, END_OF_TURN))
            fluency = answer_fluency(
                model, template.wrap(harmless), reference, batch_size=batch_size
            )
            scored = [x for x in fluency if x is not None]
            for kind, items in (("harmful", harmful), ("harmless", harmless)):
                rows = refusal_behaviour(
                    model, template, items, max_new_tokens=max_new_tokens, batch_size=batch_size
                )
                answers += [{"model": label, "lang": lang, "kind": kind, **r} for r in rows]
                fluency_mean = sum(scored) / len(scored) if scored else None
                extra = {"fluency": fluency_mean} if kind == "harmless" else {}
                card.append(
                    {"model": label, "lang": lang, "kind": kind,
                     **summarize_behaviour(rows, lang), **extra}
                )  # fmt: skip
    return card, answers


def write_card(
    directory: str | Path, card: Sequence[dict], answers: Sequence[dict], settings: dict
) -> None:
    """The card beside the testbed's weights: ``card.csv``, ``card_answers.csv``, ``card.json``.

    ``card.json`` (the card, every answer and the ``settings`` it was made with) is written last,
    so that its presence means the card is complete.
    """
    directory = Path(directory)
    for name, rows in (("card.csv", card), ("card_answers.csv", answers)):
        buffer = io.StringIO()
        # every key of every row: the harmless rows add their fluency
        columns = list(dict.fromkeys(key for row in rows for key in row))
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(directory / name, buffer.getvalue())
    record = {"settings": settings, "card": list(card), "answers": list(answers)}
    atomic_write_json(directory / "card.json", record)


def card_settings(directory: str | Path) -> dict | None:
    """The settings of the complete card in ``directory``, or None where there is none."""
    path = Path(directory) / "card.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("settings")
