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

The settings (one edit each: ``Setting``, ``vector_settings``, ``neuron_settings``) and their
greedy answers, many settings per generation (``generate_stacked``), are in
``interp.analysis.steering_sweep``.

Per answer (``steering_metrics``), each ``[setting, prompt]``:

- ``success``: the answer's language (``detect_languages``) is the target (an answer with no
  letters, or one lingua cannot tell, is not);
- ``meaning``: cosine of the mean-pooled residuals, at the model's middle layer, of the steered
  answer and the unsteered one (each read alone, BOS left out, by the unedited model); also
  ``meaning_p1``: 1 where the unsteered answer of the same prompt is the nearest of all the
  unsteered answers, which a language offset shared by all candidates cannot change. NaN where
  either answer is empty;
- ``fluency``: mean log-probability per token of the answer under the unedited model, after the
  prompt the caller gives for its column: the experiment gives the target-language version of the
  source prompt (the freeform set is parallel), so an answer is scored as if the model had been
  asked in the language it should answer in, and a fluent switch does not pay for the switch
  itself (``refusal_behaviour.answer_fluency``); NaN for an empty answer;
- ``repetition``: seq-rep-4 (Welleck et al. 2019), ``1 - distinct 4-grams / 4-grams`` over the
  answer's tokens (the model's tokenizer, no special tokens); 0 for fewer than 5 tokens;
- ``line_pass`` / ``word_pass``: the answer passes LCB's line- / word-level check
  (``interp.analysis.confusion``); NaN where it is not scored.

``summarize`` gives each setting's means with 95% bootstrap intervals over prompts, LPR / WPR /
LCPR included, and ``best_setting`` the best layer and coefficient of an arm: the highest success
among settings whose mean fluency is at most ``tolerance`` (1 nat per token) below a reference
row's (the ``native`` row: the model's own unsteered answers to the target-language prompts) and
whose mean repetition is at most ``repetition_tolerance`` (0.3) above it, ties to higher fluency,
then the smaller coefficient; none where no such setting has any success. The repetition bound
matters: a loop ("wala wala wala ...") is fluent by log-probability once it has started.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.analysis.confusion import answer_confusion, confusion_flags, pass_rates
from interp.analysis.language_id import detect_languages
from interp.analysis.neurons import valid_tokens
from interp.analysis.refusal_behaviour import answer_fluency
from interp.analysis.similarity import ParallelActivations
from interp.analysis.steering_sweep import Setting
from interp.data.languages import LANGUAGES
from interp.errors import PolylensError
from interp.extract import extract
from interp.metrics import bootstrap_mean
from interp.model.footprint import Pass
from interp.model.models import LoadedModel
from interp.model.sites import parse_sites, recording, site_width
from interp.storage.activations import READ_BUDGET

__all__ = [
    "METRICS",
    "best_setting",
    "instructed",
    "language_means",
    "meaning_similarity",
    "metrics_passes",
    "neuron_means",
    "parallel_sentences",
    "random_control",
    "repetition_rate",
    "steering_metrics",
    "steering_vectors",
    "summarize",
    "unrelated_control",
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
                valid = valid_tokens(model, batch)
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


# -- metrics ----------------------------------------------------------------------------------
def repetition_rate(tokens: Sequence, *, n: int = 4) -> float:
    """seq-rep-n (Welleck et al. 2019): ``1 - distinct n-grams / n-grams`` of a token sequence.

    0 with no repeated n-gram, near 1 for a loop ("wala wala wala ...", "itititit..."); 0 for
    fewer than ``n + 1`` tokens. ``steering_metrics`` passes the answer's token ids (the model's
    tokenizer, no special tokens), so every script is measured alike.
    """
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 0.0 if len(grams) < 2 else 1 - len(set(grams)) / len(grams)


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
        prompts: the prompts fluency conditions on, one per answer column (the experiment gives
            the target-language version of each source prompt, for every setting).
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
    ids = model.tokenizer(flat, add_special_tokens=False)["input_ids"]
    repetition = torch.tensor([repetition_rate(x) for x in ids])
    line, word = confusion_flags(answer_confusion(flat, target, langs=langs))
    values = (success, cos, p1, fluency, repetition, line, word)
    return {m: v.float().view(k, n) for m, v in zip(METRICS, values)}


def metrics_passes(
    model: LoadedModel,
    name: str,
    prompts: Sequence[str],
    n_settings: int,
    *,
    max_new_tokens: int,
    plain_among_answers: bool = True,
    layer: int | None = None,
    batch_size: int = 16,
) -> list[Pass]:
    """The forward passes ``steering_metrics`` makes, for ``polylens plan``: an upper bound.

    Every answer counted as non-empty, different from every other and ``max_new_tokens`` tokens
    long (the text of an answer re-tokenizes to about as many tokens as were generated): the
    meaning pass reads each answer (and each unsteered answer unless ``plain_among_answers``)
    up to ``layer``; fluency runs each prompt once per answer, then the answer's tokens.
    """
    if not prompts or n_settings < 1:
        return []
    n = len(prompts)
    layer = model.n_layers // 2 if layer is None else layer
    special = len(model.tokenize([""])[0])
    texts = n * (n_settings + (0 if plain_among_answers else 1))
    lengths = [len(ids) for ids in model.tokenize(list(prompts))]
    depth = max(layer, 1) / model.n_blocks
    passes = [
        Pass(f"{name}: meaning", (special + max_new_tokens,) * texts, batch_size, depth=depth),
        Pass(f"{name}: fluency prompts", tuple(lengths) * n_settings, batch_size, logits="last"),
    ]
    if max_new_tokens > 1:
        tails = (max_new_tokens - 1,) * (n * n_settings)
        passes.append(Pass(f"{name}: fluency answers", tails, batch_size, logits="all"))
    return passes


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
    reference: Mapping | None = None,
    tolerance: float = 1.0,
    repetition_tolerance: float = 0.3,
) -> dict | None:
    """The best setting of ``arm``: the highest success that stays near the reference.

    Args:
        rows: ``summarize`` rows (one language pair).
        arm: the arm whose settings compete.
        reference: a row with the ``fluency`` and ``repetition`` to stay near; None: the
            ``native`` row of ``rows`` (the model's own answers to the target-language prompts).
        tolerance: nats per token the mean fluency may fall below the reference's.
        repetition_tolerance: how far the mean repetition (seq-rep-4) may rise above the
            reference's.

    Returns:
        The chosen row (its ``layer`` and ``coeff``), ties to higher fluency then the smaller
        coefficient; None when no setting of the arm with any success stays within both bounds.
    """
    if reference is None:
        reference = next((r for r in rows if r["arm"] == "native"), None)
    if reference is None or reference.get("fluency") is None:
        raise PolylensError("best_setting needs a reference row with a fluency, or a 'native' row")
    floor = reference["fluency"] - tolerance
    ceiling = (reference.get("repetition") or 0.0) + repetition_tolerance
    ok = [
        r
        for r in rows
        if r["arm"] == arm
        and r.get("fluency") is not None
        and r["fluency"] >= floor
        and (r.get("repetition") or 0.0) <= ceiling
        and (r.get("success") or 0.0) > 0
    ]
    if not ok:
        return None
    return max(ok, key=lambda r: (r["success"], r["fluency"], -abs(r["coeff"])))
