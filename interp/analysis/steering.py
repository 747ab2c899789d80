"""Output-language steering: add a language direction, or set language neurons, and measure.

Three arms move a model's answer from a source language to a target language:

- **vector**: at residual layer ``l``, add ``coeff * v[l]`` at every position (prompt and
  generated tokens), ``v = mean(target) - mean(source)``, the difference of the languages' mean
  residuals over parallel sentences (``parallel_activations``, mean-pooled, BOS left out);
- **neurons**: the target language's neurons (``interp.analysis.neurons``,
  ``select_language_neurons``) set to ``coeff`` times their mean activation on target-language
  text, in every block (Tang et al. 2024), optionally with the source language's neurons zeroed;
- **prompt**: no edit, the instruction "Answer in French." in the prompt (``instructed``).

Controls: a random direction of the same norm per layer (``random_control``) and the vector
towards an unrelated language (``unrelated_control``, rescaled to the target vector's norm).

Answers are greedy. ``generate_stacked`` runs many settings (layer x coefficient x arm) in one
generation: the prompt batch is repeated once per setting and each copy is edited with its own
vector or neurons (``Apply`` edits that read a per-row table), so one KV-cached decoding loop
serves them all; its token ids equal those of ``generate_each``, one generation per setting
under ``Add`` (tested): adding a zero row is exact, and rows of a batch do not mix.

Per answer (``steering_metrics``), each ``[setting, prompt]``:

- ``success``: the answer's language (``detect_languages``) is the target (an answer with no
  letters, or one lingua cannot tell, is not);
- ``meaning``: cosine of the mean-pooled residuals, at the model's middle layer, of the steered
  answer and the unsteered one (each read alone, BOS left out, by the unedited model); also
  ``meaning_p1``: 1 where the unsteered answer of the same prompt is the nearest of all the
  unsteered answers, which a language offset shared by all candidates cannot change. NaN where
  either answer is empty;
- ``fluency``: mean log-probability per token of the answer after the source prompt under the
  unedited model (``refusal_behaviour.answer_fluency``); NaN for an empty answer. A target
  language answer to a source-language prompt pays for the switch, mostly on its first token;
- ``repetition``: seq-rep-4 (Welleck et al. 2019), ``1 - distinct 4-grams / 4-grams`` over the
  answer's words (whitespace-separated, lowercased; the letters of a text in Chinese, Japanese
  or Thai, which have no spaces, one per word); 0 for fewer than 5 words;
- ``line_pass`` / ``word_pass``: the answer passes LCB's line- / word-level check
  (``interp.analysis.confusion``); NaN where it is not scored.

``summarize`` gives each setting's means with 95% bootstrap intervals over prompts, LPR / WPR /
LCPR included, and ``best_setting`` the best layer and coefficient of an arm: the highest success
among settings whose mean fluency is at most ``tolerance`` (1 nat per token) below a reference
(the unsteered answers'), ties to higher fluency, then the smaller coefficient.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from interp.analysis.confusion import answer_confusion, confusion_flags, pass_rates
from interp.analysis.language_id import detect_languages
from interp.analysis.neurons import _valid_tokens
from interp.analysis.refusal_behaviour import answer_fluency
from interp.analysis.similarity import ParallelActivations
from interp.data.languages import LANGUAGES
from interp.errors import PolylensError
from interp.extract import extract
from interp.interventions import Add, Apply, Edit, intervene
from interp.metrics import bootstrap_mean
from interp.model.models import LoadedModel, _cut_at
from interp.model.sites import layer_site, parse_sites, recording, site_width
from interp.storage.activations import READ_BUDGET

__all__ = [
    "METRICS",
    "Generations",
    "Setting",
    "best_setting",
    "generate_each",
    "generate_stacked",
    "instructed",
    "language_means",
    "meaning_similarity",
    "neuron_means",
    "neuron_settings",
    "parallel_sentences",
    "random_control",
    "repetition_rate",
    "stacked_edits",
    "steering_metrics",
    "steering_vectors",
    "summarize",
    "unrelated_control",
    "vector_settings",
]

METRICS = ("success", "meaning", "meaning_p1", "fluency", "repetition", "line_pass", "word_pass")
"""The per-answer metrics of ``steering_metrics``, in order."""

_AVERAGED = ("success", "meaning", "meaning_p1", "fluency", "repetition")
"""The metrics ``summarize`` averages answer by answer (the pass flags become LCB's rates)."""


# -- directions ------------------------------------------------------------------------------
def parallel_sentences(
    langs: Sequence[str], *, parallel_dir: str | None = None, split: str = "devtest"
) -> dict[str, list[str]]:
    """``{lang: sentences}`` of the bundled ``parallel`` set, or of the user's ``parallel_dir``.

    The user's directory is read as ``mid-layer-alignment`` reads it (polylens's ``<lang>.txt``,
    FLORES+ with ``split``, NTREX-128: ``interp.data.user.read_parallel_dir``).
    """
    if parallel_dir is not None:
        from interp.data.user import read_parallel_dir

        return read_parallel_dir(parallel_dir, langs, split)
    from interp.data import load

    records = load("parallel", list(langs))
    return {lang: [r.text for r in records if r.lang == lang] for lang in langs}


def language_means(
    parallel: ParallelActivations, *, budget: int | None = READ_BUDGET
) -> Float[Tensor, "lang layer d_model"]:
    """Each language's mean residual at every layer (float32), a chunk of layers at a time.

    ``parallel`` comes from ``interp.analysis.similarity.parallel_activations`` (mean pooling
    recommended), languages in ``parallel.langs`` order.
    """
    parts = [x.float().mean(2) for _, x in parallel.chunks(budget=budget)]
    return torch.cat(parts, dim=1)


def steering_vectors(
    means: Float[Tensor, "lang layer d_model"],
) -> Float[Tensor, "source target layer d_model"]:
    """``v[s, t, l] = means[t, l] - means[s, l]``: from language ``s`` towards ``t`` at layer l."""
    return means[None, :] - means[:, None]


def random_control(
    vectors: Float[Tensor, "layer d_model"], *, seed: int = 0
) -> Float[Tensor, "layer d_model"]:
    """A random (Gaussian) direction per layer, with the norm of that layer's ``vectors`` row."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(vectors.shape, generator=gen, dtype=torch.float32)
    norms = vectors.float().norm(dim=-1, keepdim=True)
    return noise / noise.norm(dim=-1, keepdim=True) * norms


def unrelated_control(
    vectors: Float[Tensor, "source target layer d_model"],
    langs: Sequence[str],
    source: str,
    target: str,
    unrelated: str | None = None,
) -> tuple[str, Float[Tensor, "layer d_model"]]:
    """The vector from ``source`` towards an unrelated language, at the target vector's norm.

    ``unrelated``: that language; None: the first of ``langs`` that is neither source nor target.
    Returns ``(unrelated, vectors [layer, d_model])``.
    """
    langs = list(langs)
    if unrelated is None:
        others = [x for x in langs if x not in (source, target)]
        if not others:
            raise PolylensError("an unrelated-language control needs a third language")
        unrelated = others[0]
    if unrelated in (source, target) or unrelated not in langs:
        raise PolylensError(f"unrelated language {unrelated!r}: pick one of {langs}, not {target}")
    s, t, u = langs.index(source), langs.index(target), langs.index(unrelated)
    v, ref = vectors[s, u].float(), vectors[s, t].float()
    scale = ref.norm(dim=-1, keepdim=True) / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return unrelated, v * scale


@torch.inference_mode()
def neuron_means(
    model: LoadedModel, texts: Mapping[str, Sequence[str]], *, batch_size: int = 16
) -> Float[Tensor, "lang block neuron"]:
    """Mean ``mlp_act`` activation of every neuron on each language's tokens (BOS, pads left out).

    Languages in ``texts`` order; the same tokens as ``neurons.activation_probability`` counts.
    """
    sites = [f"mlp_act.{i}" for i in range(model.n_blocks)]
    width = site_width(model, parse_sites(model, sites[0])[0])
    sums = torch.zeros(len(texts), model.n_blocks, width, device=model.device)
    with recording(model, sites) as records:
        for li, (lang, lines) in enumerate(texts.items()):
            n = 0
            for _, batch in model.padded_batches(list(lines), batch_size=batch_size):
                model.body(**batch, use_cache=False)
                acts = torch.stack([records[s].pop() for s in sites]).float()
                valid = _valid_tokens(model, batch)
                sums[li] += (acts * valid[None, ..., None]).sum((1, 2))
                n += int(valid.sum())
            if n == 0:
                raise PolylensError(f"language {lang!r} has no tokens to average")
            sums[li] /= n
    return sums.cpu()


def instructed(
    messages: Sequence[str], target: str, *, template: str = "{message}\nAnswer in {language}."
) -> list[str]:
    """The prompting arm: each message followed by an instruction to answer in ``target``.

    ``template`` has ``{message}`` and ``{language}`` (the target's English name). Apply a chat
    template afterwards where the model has one, and generate under ``Setting("prompt")`` (no
    edit); ``steering_metrics`` then scores these answers after the plain prompts, as every arm's.
    """
    name = LANGUAGES[target].name if target in LANGUAGES else target
    return [template.format(message=m, language=name) for m in messages]


# -- settings ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Setting:
    """One steering setting: the edit every copy of the prompt batch it owns receives."""

    arm: str
    """``none``, ``vector``, ``neurons``, ``random``, ``unrelated``, ``prompt`` or another label."""
    layer: int | None = None
    """Residual layer the vector is added at (vector arms)."""
    coeff: float = 0.0
    """Multiplier of the vector, or of the neurons' values (0 adds nothing to the residual, but
    sets the neurons to zero)."""
    vector: Float[Tensor, " d_model"] | None = field(default=None, repr=False)
    """Added as ``coeff * vector`` at every position of layer ``layer``."""
    neurons: Bool[Tensor, "block neuron"] | None = field(default=None, repr=False)
    """``mlp_act`` neurons set to ``coeff * values``."""
    values: Float[Tensor, "block neuron"] | None = field(default=None, repr=False)
    """The values the neurons are set to, at ``coeff = 1``."""
    label: str = ""
    """Free text for tables (e.g. the unrelated control's language)."""

    def __post_init__(self) -> None:
        if (self.vector is None) != (self.layer is None):
            raise PolylensError("a vector setting needs both a layer and a vector")
        if (self.neurons is None) != (self.values is None):
            raise PolylensError("a neuron setting needs both neurons and values")

    def edits(self) -> dict[str, Edit]:
        """This setting's edits for a plain generation (``Add``, or ``Apply`` at ``mlp_act``)."""
        edits: dict[str, Edit] = {}
        if self.vector is not None:
            edits[layer_site(self.layer).name] = Add(self.vector, self.coeff)
        if self.neurons is not None:
            for block, row in enumerate(self.neurons):
                if row.any():
                    value = self.coeff * self.values[block].float()
                    edits[f"mlp_act.{block}"] = _set_neurons(row[None], value[None])
        return edits

    def describe(self) -> dict:
        """The setting as a table row: ``arm``, ``layer``, ``coeff``, ``label``."""
        return {"arm": self.arm, "layer": self.layer, "coeff": self.coeff, "label": self.label}


def vector_settings(
    arm: str,
    vectors: Float[Tensor, "layer d_model"],
    layers: Sequence[int],
    coeffs: Sequence[float],
    *,
    label: str = "",
) -> list[Setting]:
    """One setting per layer and coefficient, layer-major: ``coeff * vectors[layer]``."""
    return [
        Setting(arm, layer=layer, coeff=float(c), vector=vectors[layer], label=label)
        for layer in layers
        for c in coeffs
    ]


def neuron_settings(
    target: Bool[Tensor, "block neuron"],
    values: Float[Tensor, "block neuron"],
    coeffs: Sequence[float],
    *,
    deactivate: Bool[Tensor, "block neuron"] | None = None,
    arm: str = "neurons",
) -> list[Setting]:
    """The neuron arm: ``target`` neurons set to ``coeff * values`` (e.g. their target mean).

    ``deactivate``: neurons set to zero as well (e.g. the source language's, as Tang et al.
    do), unless they are target neurons too.
    """
    neurons, vals = target.bool(), values.float() * target
    if deactivate is not None:
        neurons = neurons | deactivate.bool()
    return [Setting(arm, coeff=float(c), neurons=neurons, values=vals) for c in coeffs]


# -- generation -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Generations:
    """Greedy answers of every setting to every prompt."""

    texts: list[list[str]]
    """``[setting][prompt]`` decoded answers (cut before the first stop string)."""
    ids: list[list[list[int]]]
    """``[setting][prompt]`` generated token ids, trailing pads removed."""


def _set_neurons(mask: Tensor, values: Tensor) -> Apply:
    """Set the masked neurons of each row (``mask`` / ``values`` ``[row or 1, neuron]``)."""
    cache: dict = {}

    def fn(x: Tensor) -> Tensor:
        key = (x.device, x.dtype)
        if key not in cache:
            cache[key] = (mask.to(x.device)[:, None], values.to(x.device, x.dtype)[:, None])
        m, v = cache[key]
        return torch.where(m, v, x)

    return Apply(fn)


def _add_rows(deltas: Tensor) -> Apply:
    """Add a different vector to each row, at every position (a zero row leaves it as it is)."""
    cache: dict = {}

    def fn(x: Tensor) -> Tensor:
        key = (x.device, x.dtype)
        if key not in cache:  # one host-to-device copy, not one per decoding step
            cache[key] = deltas.to(x.device, x.dtype)[:, None]
        return x + cache[key]

    return Apply(fn)


def stacked_edits(settings: Sequence[Setting], rows: int) -> dict[str, list[Edit]]:
    """Edits of a batch of ``len(settings)`` copies of ``rows`` rows each, copy-major.

    Copy ``i`` gets setting ``i``'s edit: per-row additions at each layer some setting uses,
    per-row neuron values at each block some setting sets. Values are computed as ``Add`` and
    ``Setting.edits`` compute them (``coeff * x`` in float32, cast to the site's dtype once).
    """
    n = len(settings) * rows
    adds: dict[int, Tensor] = {}
    masks: dict[int, tuple[Tensor, Tensor]] = {}
    for i, s in enumerate(settings):
        span = slice(i * rows, (i + 1) * rows)
        if s.vector is not None:
            delta = adds.setdefault(s.layer, torch.zeros(n, s.vector.shape[0]))
            delta[span] = s.coeff * s.vector.float()
        if s.neurons is not None:
            for block, row in enumerate(s.neurons):
                if row.any():
                    width = row.shape[0]
                    m, v = masks.setdefault(
                        block, (torch.zeros(n, width, dtype=torch.bool), torch.zeros(n, width))
                    )
                    m[span] = row
                    v[span] = s.coeff * s.values[block].float()
    edits: dict[str, list[Edit]] = {}
    for layer, delta in adds.items():
        edits[layer_site(layer).name] = [_add_rows(delta)]
    for block, (m, v) in masks.items():
        edits[f"mlp_act.{block}"] = [_set_neurons(m, v)]
    return edits


def _generate(
    model: LoadedModel, batch: dict, max_new_tokens: int, stops: list[str]
) -> tuple[list[list[int]], list[str]]:
    """Greedy ids (trailing pads removed) and texts of a padded batch, as ``model.generate``."""
    pad = model.tokenizer.pad_token_id
    out = model.hf.generate(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=pad,
        use_cache=True,
        stop_strings=stops or None,
        tokenizer=model.tokenizer,
    )
    new = out[:, batch["input_ids"].shape[1] :].tolist()
    ids = []
    for row in new:
        while row and row[-1] == pad:
            row.pop()
        ids.append(row)
    texts = [_cut_at(t, stops) for t in model.tokenizer.batch_decode(new, skip_special_tokens=True)]
    return ids, texts


def _check(model: LoadedModel, max_new_tokens: int, batch_size: int) -> None:
    model.require_next_token("steering generation")
    if max_new_tokens < 1 or batch_size < 1:
        raise PolylensError("steering generation needs max_new_tokens >= 1 and batch_size >= 1")


@torch.inference_mode()
def generate_stacked(
    model: LoadedModel,
    prompts: Sequence[str],
    settings: Sequence[Setting],
    *,
    max_new_tokens: int,
    stop: str | Sequence[str] | None = None,
    batch_size: int = 16,
    rows_per_pass: int = 256,
    progress: str | None = None,
) -> Generations:
    """Greedy answers under every setting, many settings per generation.

    Prompts are taken ``batch_size`` at a time (left-padded as ``model.generate`` pads them);
    each batch is repeated once per setting, as many settings per generation as
    ``rows_per_pass`` rows allow (at least one), every copy edited with its own setting.

    Args:
        model: the model.
        prompts: the texts, verbatim (chat template applied where wanted).
        settings: the settings (``Setting("none")``: unedited).
        max_new_tokens: most tokens per answer.
        stop: a string or several that end an answer (as ``model.generate``).
        batch_size: prompts per batch.
        rows_per_pass: most rows (prompts x settings) per generation.
        progress: a tqdm bar over settings x prompt batches, with this label.
    """
    _check(model, max_new_tokens, batch_size)
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    k = len(settings)
    texts = [[""] * len(prompts) for _ in settings]
    ids: list[list[list[int]]] = [[[] for _ in prompts] for _ in settings]
    n_batches = -(-len(prompts) // batch_size)
    bar = tqdm(total=k * n_batches, desc=progress, disable=progress is None, leave=False)
    for rows, batch in model.padded_batches(list(prompts), batch_size=batch_size):
        r = len(rows)
        per_pass = max(1, rows_per_pass // r)
        for start in range(0, k, per_pass):
            chunk = list(range(start, min(k, start + per_pass)))
            stacked = {
                key: batch[key].repeat(len(chunk), 1) for key in ("input_ids", "attention_mask")
            }
            with intervene(model, stacked_edits([settings[i] for i in chunk], r)):
                got_ids, got_texts = _generate(model, stacked, max_new_tokens, stops)
            for j, i in enumerate(chunk):
                for q, row in enumerate(rows):
                    ids[i][row] = got_ids[j * r + q]
                    texts[i][row] = got_texts[j * r + q]
            bar.update(len(chunk))
    bar.close()
    return Generations(texts, ids)


@torch.inference_mode()
def generate_each(
    model: LoadedModel,
    prompts: Sequence[str],
    settings: Sequence[Setting],
    *,
    max_new_tokens: int,
    stop: str | Sequence[str] | None = None,
    batch_size: int = 16,
) -> Generations:
    """The reference of ``generate_stacked``: one generation per setting under its ``edits()``."""
    _check(model, max_new_tokens, batch_size)
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    texts = [[""] * len(prompts) for _ in settings]
    ids: list[list[list[int]]] = [[[] for _ in prompts] for _ in settings]
    for i, s in enumerate(settings):
        with intervene(model, s.edits()):
            for rows, batch in model.padded_batches(list(prompts), batch_size=batch_size):
                got_ids, got_texts = _generate(model, batch, max_new_tokens, stops)
                for q, row in enumerate(rows):
                    ids[i][row], texts[i][row] = got_ids[q], got_texts[q]
    return Generations(texts, ids)


# -- metrics ----------------------------------------------------------------------------------
def repetition_rate(text: str, *, n: int = 4) -> float:
    """seq-rep-n: ``1 - distinct n-grams / n-grams`` of the text's words (0 with no n-gram repeat).

    Words are whitespace-separated and lowercased; a text with no spaces but letters of Chinese,
    Japanese or Thai counts each non-space character as a word. 0 for fewer than ``n + 1`` words.
    """
    words = text.lower().split()
    if len(words) <= 1 and any(_unspaced(ch) for ch in text):
        words = [ch for ch in text if not ch.isspace()]
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 0.0 if len(grams) < 2 else 1 - len(set(grams)) / len(grams)


def _unspaced(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith(("CJK", "HIRAGANA", "KATAKANA", "THAI"))


@torch.inference_mode()
def meaning_similarity(
    model: LoadedModel,
    answers: Sequence[str],
    references: Sequence[str],
    index: Sequence[int],
    *,
    layer: int | None = None,
    batch_size: int = 16,
) -> tuple[Float[Tensor, " answer"], Float[Tensor, " answer"]]:
    """Cosine of each answer to its reference, and whether it retrieves it among the references.

    Args:
        model: the (unedited) model that reads the texts.
        answers: the steered answers.
        references: the unsteered answers, one per prompt.
        index: for each answer, the position of its reference in ``references``.
        layer: residual layer read (default: the middle one, ``n_layers // 2``).
        batch_size: texts per forward pass.

    Returns:
        ``(cosine [answer], p1 [answer])``: p1 is 1 where the answer's own reference is the most
        similar of the references (NaN: the answer or its reference is empty).
    """
    layer = model.n_layers // 2 if layer is None else layer
    unique = sorted({t for t in [*answers, *references] if t.strip()})
    pooled = _pooled(model, unique, layer, batch_size)
    at = {t: i for i, t in enumerate(unique)}
    ref, ref_ok = _rows(pooled, at, references, model.d_model)
    ans, ans_ok = _rows(pooled, at, answers, model.d_model)
    sims = ans @ ref.T
    sims[:, ~ref_ok] = -math.inf  # an empty reference is never the nearest
    idx = torch.tensor(list(index), dtype=torch.long)
    cos = sims[torch.arange(len(answers)), idx]
    ok = ans_ok & ref_ok[idx]
    p1 = (sims.argmax(-1) == idx).float()
    return torch.where(ok, cos, math.nan), torch.where(ok, p1, math.nan)


def _rows(
    pooled: Tensor, at: dict[str, int], texts: Sequence[str], d: int
) -> tuple[Float[Tensor, "text d_model"], Bool[Tensor, " text"]]:
    """Unit vectors of ``texts`` (zero for an empty text) and which texts have one."""
    ok = torch.tensor([t in at for t in texts], dtype=torch.bool)
    x = torch.zeros(len(texts), d)
    if ok.any():
        x[ok] = pooled[[at[t] for t in texts if t in at]]
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12), ok


def _pooled(model: LoadedModel, texts: list[str], layer: int, batch_size: int) -> Tensor:
    """Mean residual of each text's tokens at ``layer``, a leading special token left out."""
    if not texts:
        return torch.zeros(0, model.d_model)
    ids = model.tokenize(texts)
    special = set(model.tokenizer.all_special_ids)
    spans = [(1 if model.causal and len(x) > 1 and x[0] in special else 0, len(x)) for x in ids]
    acts = extract(
        model, texts, layers=[layer], positions=spans, batch_size=batch_size, progress=False
    )
    return torch.stack([rows[:, 0].float().mean(0) for rows in acts.per_prompt()])


def steering_metrics(
    model: LoadedModel,
    prompts: Sequence[str],
    answers: Sequence[Sequence[str]],
    plain: Sequence[str],
    target: str,
    *,
    langs: Sequence[str] | None = None,
    layer: int | None = None,
    batch_size: int = 16,
) -> dict[str, Float[Tensor, "setting prompt"]]:
    """Every metric of ``METRICS`` for each setting's answer to each prompt (module docstring).

    Args:
        model: the unedited model (no edit may be held while it scores).
        prompts: the source-language prompts, which fluency conditions on (for every arm).
        answers: ``[setting][prompt]`` answers, e.g. ``generate_stacked(...).texts``.
        plain: the unsteered answer to each prompt (the meaning reference).
        target: the language the answers should be in.
        langs: languages language identification chooses among (None: polylens's twelve).
        layer: residual layer of the meaning metric (default: the middle one).
        batch_size: texts per forward pass.

    Returns:
        ``{metric: [setting, prompt]}`` float tensors, NaN where a metric is undefined.
    """
    k, n = len(answers), len(prompts)
    if any(len(a) != n for a in answers) or len(plain) != n:
        raise PolylensError(f"every setting needs one answer per prompt ({n})")
    flat = [a for row in answers for a in row]
    found = detect_languages(flat, langs)
    success = torch.tensor([x == target for x in found], dtype=torch.float32)
    cos, p1 = meaning_similarity(
        model, flat, plain, [i for _ in range(k) for i in range(n)], layer=layer,
        batch_size=batch_size,
    )  # fmt: skip
    pairs = sorted({(i % n, a) for i, a in enumerate(flat) if a})
    scored = answer_fluency(
        model, [prompts[p] for p, _ in pairs], [a for _, a in pairs], batch_size=batch_size
    )
    by_pair = {pair: math.nan if v is None else v for pair, v in zip(pairs, scored)}
    fluency = torch.tensor([by_pair.get((i % n, a), math.nan) for i, a in enumerate(flat)])
    repetition = torch.tensor([repetition_rate(a) for a in flat])
    line, word = confusion_flags(answer_confusion(flat, target, langs=langs))
    values = (success, cos, p1, fluency, repetition, line, word)
    return {m: v.float().view(k, n) for m, v in zip(METRICS, values)}


def summarize(
    settings: Sequence[Setting],
    metrics: Mapping[str, Float[Tensor, "setting prompt"]],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict]:
    """One row per setting: its description, and each metric's mean with a 95% interval.

    ``success``, ``meaning``, ``meaning_p1``, ``fluency`` and ``repetition``: means and
    bootstrap intervals (``interp.metrics.bootstrap_mean``, ``n_boot`` resamples of the prompts),
    NaN left out. ``lpr``, ``wpr`` and ``lcpr`` (with ``_low`` / ``_high``): LCB's rates from
    ``line_pass`` / ``word_pass`` (``interp.analysis.confusion.pass_rates``), resampled jointly.
    """
    rows = []
    for i, s in enumerate(settings):
        row = s.describe() | {"n": int(metrics[METRICS[0]].shape[1])}
        for m in _AVERAGED:
            v = metrics[m][i]
            v = v[~v.isnan()]
            if len(v) == 0:
                row |= {m: None, f"{m}_low": None, f"{m}_high": None}
                continue
            mean, low, high = bootstrap_mean(v.double(), n_boot, seed)
            row |= {m: float(mean), f"{m}_low": float(low), f"{m}_high": float(high)}
        rates = pass_rates(
            metrics["line_pass"][i], metrics["word_pass"][i], n_boot=n_boot, seed=seed
        )
        row |= {k: v for k, v in rates.items() if k.split("_")[0] in ("lpr", "wpr", "lcpr")}
        rows.append(row)
    return rows


def best_setting(
    rows: Sequence[dict],
    *,
    arm: str,
    reference_fluency: float | None = None,
    tolerance: float = 1.0,
) -> dict | None:
    """The best setting of ``arm``: the highest success whose fluency stays near the reference.

    Args:
        rows: ``summarize`` rows (one language pair).
        arm: the arm whose settings compete.
        reference_fluency: mean fluency to stay near; None: the ``none`` row's (unsteered). The
            prompting arm's is another choice: fluent target-language answers, scored alike.
        tolerance: nats per token the mean fluency may fall below the reference.

    Returns:
        The chosen row (its ``layer`` and ``coeff``), ties to higher fluency then the smaller
        coefficient; None when no setting of the arm stays within the tolerance.
    """
    if reference_fluency is None:
        plain = [r for r in rows if r["arm"] == "none" and r.get("fluency") is not None]
        if not plain:
            raise PolylensError("best_setting needs reference_fluency or an unsteered ('none') row")
        reference_fluency = plain[0]["fluency"]
    ok = [
        r
        for r in rows
        if r["arm"] == arm
        and r.get("fluency") is not None
        and r["fluency"] >= reference_fluency - tolerance
    ]
    if not ok:
        return None
    return max(ok, key=lambda r: (r["success"], r["fluency"], -abs(r["coeff"])))
