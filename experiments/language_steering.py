"""language-steering: move a model's answer into another language, and measure language confusion.

After Tang et al. 2024 (steering by language-specific neurons), activation addition with a
difference of mean residuals, and the Language Confusion Benchmark (Marchisio et al. 2024): prompts
in a source language that invite a free answer (the bundled ``freeform`` set) are answered
greedily with the model edited towards a target language, by a steering vector (the difference of
the two languages' mean residuals on parallel text) added at each candidate layer, or by the
target's language neurons (LAPE) set to their mean activation; plain prompting ("Answer in
French.") is the baseline an edit has to beat. Per layer, coefficient and arm: the share of
answers in the target language, the meaning kept, fluency and repetition, with bootstrap
intervals; the best setting per pair; controls at the best layer (a random direction of the same
norm, the vector of an unrelated language); and line- and word-level language confusion of plain
answers to monolingual and cross-lingual prompts, with and without steering at the best layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from experiments import register
from experiments import steering_outputs as outputs
from experiments.base import ExperimentConfig, ResultDir, seed_everything
from experiments.fields import Range, above, at_least
from experiments.steering_pairs import Sweep, wrap
from interp.analysis import neurons as nrn
from interp.analysis import steering as st
from interp.analysis import steering_sweep as sw
from interp.analysis.similarity import drops_first_token, parallel_activations
from interp.data import load
from interp.data.languages import check_langs
from interp.data.loader import dataset_sha256
from interp.errors import PolylensError
from interp.model.footprint import Workload, forward_pass, held_vectors
from interp.model.models import LoadedModel
from interp.model.sites import parse_sites, site_width
from interp.storage.store import ActivationStore

NAME = "language-steering"
_RATE = Range(0, 1, lo_open=True, hi_open=True)


@dataclass
class SteeringConfig(ExperimentConfig):
    """Steering and confusion settings on top of the shared experiment fields.

    ``langs`` are the languages of the neuron selection (LAPE compares them) and those the
    unrelated-language control picks from; sources and targets must be among them.
    """

    sources: list[str] = field(default_factory=lambda: ["en", "zh"])
    """Languages of the prompts, steered away from."""
    targets: list[str] = field(default_factory=lambda: ["en", "fr", "zh", "sw"])
    """Languages steered towards (a target equal to the source is skipped)."""
    arms: list[Literal["vector", "neurons", "prompt"]] = field(
        default_factory=lambda: ["vector", "neurons", "prompt"]
    )
    """vector: the mean-difference vector added at one layer; neurons: the target's language
    neurons set to their mean activation; prompt: "Answer in <language>." after the prompt."""
    layers: list[int] | None = None
    """Residual layers the vector is added at (default: every layer_stride-th from layer 1)."""
    layer_stride: int = 3
    """Stride of the default layers."""
    coeffs: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0])
    """Multipliers of the steering vector (1: the mean residual moves from source to target)."""
    neuron_coeffs: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0])
    """Multipliers of the target neurons' mean activation (the neurons arm's grid)."""
    deactivate_source: bool = True
    """The neurons arm also sets the source language's neurons to zero (as Tang et al. do)."""
    n_prompts: int = 40
    """Freeform prompts per language (at most 50), questions and sentence beginnings alternating."""
    max_new_tokens: int = 32
    """Most tokens generated per answer."""
    template: Literal["plain", "chat"] = "plain"
    """plain: the prompt as it is (a question followed by a newline, a beginning continued); chat:
    the model's chat template, one user turn (instruction-tuned models)."""
    parallel_dir: str | None = None
    """Directory of the user's line-aligned parallel files (``<lang>.txt``, FLORES+ or NTREX-128,
    as mid-layer-alignment reads them) for the vectors and the neurons; default: the bundled set."""
    parallel_split: Literal["dev", "devtest"] = "devtest"
    """The FLORES+ split read from a FLORES+ ``parallel_dir`` (other layouts ignore it)."""
    n_parallel: int | None = None
    """Parallel sentences per language for the vectors and the neurons (default: all)."""
    top_rate: float = 0.01
    """LAPE: share of all neurons selected, lowest entropy first (as language-neurons)."""
    filter_rate: float = 0.95
    """LAPE: candidates exceed this quantile of all activation probabilities in some language."""
    bar_rate: float = 0.95
    """LAPE: a selected neuron belongs to the languages where it exceeds this quantile."""
    unrelated: str | None = None
    """Language of the unrelated-vector control (default: per pair, the first of langs that is
    neither its source nor its target)."""
    tolerance: float = 1.0
    """Best setting: the highest success whose mean fluency is at most this many nats per token
    below the native answers' (the model's own answers to the target-language prompts; every
    answer is scored after the target-language version of its prompt)."""
    repetition_tolerance: float = 0.3
    """Best setting: mean repetition (seq-rep-4 over tokens) at most this much above the native
    answers' (a loop is fluent by log-probability once it has started)."""
    rows_per_pass: int = 256
    """Rows per generation: prompt copies of several settings stacked."""
    n_boot: int = 1000
    """Bootstrap resamples of the prompts for the 95% intervals."""
    n_examples: int = 2
    """Prompts per pair whose answers the report shows (all of them: tables/answers.csv)."""

    _ranges: ClassVar[dict[str, Range]] = {
        "layer_stride": at_least(1),
        "n_prompts": at_least(1),
        "max_new_tokens": at_least(1),
        "n_parallel": at_least(2),
        "top_rate": _RATE,
        "filter_rate": _RATE,
        "bar_rate": _RATE,
        "tolerance": above(0),
        "repetition_tolerance": Range(0, 1),
        "rows_per_pass": at_least(1),
        "n_boot": at_least(1),
        "n_examples": at_least(0),
    }
    needs_next_token: ClassVar[str | None] = "steering generation"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("sources", "targets", "arms"):
            if not getattr(self, name):
                raise PolylensError(f"config field {name} is empty")
        for name in ("sources", "targets"):
            for lang in check_langs(getattr(self, name)):
                if lang not in self.langs:
                    raise PolylensError(
                        f"config field {name}: {lang!r} is not in langs; add it to langs (the "
                        "languages of the neuron selection and of the unrelated control)"
                    )
        if not self.pairs:
            raise PolylensError("no (source, target) pair of different languages; add a target")
        if self.unrelated is not None and self.unrelated not in self.langs:
            raise PolylensError(f"config field unrelated: {self.unrelated!r} is not in langs")
        if "vector" in self.arms:
            for s, t in self.pairs:
                if self.unrelated_for(s, t) is None:
                    raise PolylensError(
                        f"the unrelated-language control of {s}>{t} needs a third language: add "
                        "one to langs, or set unrelated to one that is neither source nor target"
                    )
        if self.layers is not None and any(layer < 0 for layer in self.layers):
            raise PolylensError("config field layers: layers are indices >= 0")

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """Every (source, target) of different languages, source-major."""
        return [(s, t) for s in self.sources for t in self.targets if s != t]

    def unrelated_for(self, source: str, target: str) -> str | None:
        """The unrelated control's language for a pair (None: there is none)."""
        if self.unrelated is not None:
            return None if self.unrelated in (source, target) else self.unrelated
        return next((x for x in self.langs if x not in (source, target)), None)

    def vector_langs(self) -> list[str]:
        """The languages whose mean residuals the vectors and the controls need, langs order."""
        need = set(self.sources) | set(self.targets)
        need |= {self.unrelated_for(s, t) for s, t in self.pairs}
        return [x for x in self.langs if x in need]

    def confusion_langs(self) -> list[str]:
        """Languages of the monolingual confusion prompts: every source and target."""
        return [x for x in self.langs if x in self.sources or x in self.targets]


# -- inputs ---------------------------------------------------------------------------------------
def _prompt_texts(config: SteeringConfig) -> dict[str, list]:
    """``{lang: freeform records}``: questions and beginnings alternating, ``n_prompts`` each."""
    langs = config.confusion_langs()
    records = load("freeform", langs)
    out = {}
    for lang in langs:
        mine = [r for r in records if r.lang == lang]
        questions = [r for r in mine if r.kind == "question"]
        others = [r for r in mine if r.kind != "question"]
        mixed = [r for pair in zip(questions, others) for r in pair]
        mixed += questions[len(others) :] + others[len(questions) :]
        if config.n_prompts > len(mixed):
            raise PolylensError(
                f"n_prompts = {config.n_prompts}, but freeform has {len(mixed)} prompts in "
                f"{lang!r}; lower n_prompts"
            )
        out[lang] = mixed[: config.n_prompts]
    return out


def _parallel(config: SteeringConfig) -> tuple[dict[str, list[str]], str]:
    """Parallel sentences of every language the arms need, and where they came from."""
    langs = list(config.langs) if "neurons" in config.arms else config.vector_langs()
    if "vector" not in config.arms and "neurons" not in config.arms:
        return {}, "none (prompting arm only)"
    text = st.parallel_sentences(
        langs, parallel_dir=config.parallel_dir, split=config.parallel_split
    )
    n = config.n_parallel
    source = (
        config.parallel_dir
        if config.parallel_dir is not None
        else f"parallel (sha256 {dataset_sha256('parallel')[:12]})"
    )
    return {lang: lines[:n] for lang, lines in text.items()}, source


def _layers(config: SteeringConfig, n_layers: int) -> list[int]:
    if config.layers is None:
        return list(range(1, n_layers, config.layer_stride))
    bad = [layer for layer in config.layers if layer >= n_layers]
    if bad:
        raise PolylensError(
            f"config field layers: layer {bad[0]} does not exist; the model has layers 0 to "
            f"{n_layers - 1}"
        )
    return list(config.layers)


def _grid(config: SteeringConfig, layers: list[int]) -> int:
    """Settings per target in a source's sweep: the vector grid and the neuron grid."""
    vector = len(layers) * len(config.coeffs) if "vector" in config.arms else 0
    return vector + (len(config.neuron_coeffs) if "neurons" in config.arms else 0)


def workload(config: SteeringConfig, model: LoadedModel) -> Workload:
    """Residuals of parallel text (vectors) and activations of every block (neurons); per
    source, the sweep, the prompting arm, the controls and instructed prompts steered at the best
    layer, each scored; the monolingual confusion prompts, plain and steered. Upper bound:
    answers are counted at max_new_tokens tokens, and every pair as if it had a best vector
    setting (the passes named "after best")."""
    prompts = _prompt_texts(config)
    sentences, _ = _parallel(config)
    layers = _layers(config, model.n_layers)
    scoring = dict(max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)
    gen = scoring | {"rows_per_pass": config.rows_per_pass}
    vector, grid = "vector" in config.arms, _grid(config, layers)
    passes, held = [], 0
    if vector:
        lines = [s for lang in config.vector_langs() for s in sentences[lang]]
        options = dict(batch_size=config.batch_size, stored=model.n_layers)
        passes.append(forward_pass(model, "parallel residuals", lines, **options))
        if drops_first_token(model, lines, "mean"):
            passes.append(forward_pass(model, "shared first residual", lines[:1], **options))
        held += len(config.vector_langs()) ** 2 * model.n_layers  # the vector table
    if "neurons" in config.arms:
        for name, langs in (("activation probability", config.langs), ("mean", config.targets)):
            passes += [
                forward_pass(model, f"neurons: {name}", sentences[lang],
                             batch_size=config.batch_size)
                for lang in langs
            ]  # fmt: skip
        held += neuron_held(model, [p for p in passes if p.name.startswith("neurons")])
    generated: set[str] = set()  # languages whose unsteered answers exist (Sweep.plain)
    for s in config.sources:
        targets = [t for t in config.targets if t != s]
        plain = wrap(model, prompts[s], config.template)
        fresh = s not in generated
        n_sweep = int(fresh) + grid * len(targets)
        if n_sweep:
            passes += sw.sweep_passes(model, f"sweep ({s})", plain, n_sweep, **gen)
        generated.add(s)
        for t in targets:
            if t not in generated:
                wrapped = wrap(model, prompts[t], config.template)
                passes += sw.sweep_passes(model, f"plain ({t})", wrapped, 1, **gen)
                generated.add(t)
        if "prompt" in config.arms:
            asked = [p for t in targets for p in wrap(model, prompts[s], config.template, t)]
            passes += sw.sweep_passes(model, f"prompting arm ({s})", asked, 1, **gen)
        for t in targets:  # unsteered, native, the grid, the prompting arm
            n = 2 + grid + ("prompt" in config.arms)
            in_target = wrap(model, prompts[t], config.template)
            passes += st.metrics_passes(model, f"scoring ({s}>{t})", in_target, n, **scoring)
        if vector:
            passes += sw.sweep_passes(
                model, f"after best: controls ({s})", plain, 2 * len(targets), **gen
            )
            for t in targets:
                if "prompt" in config.arms:
                    asked = wrap(model, prompts[s], config.template, t)
                    passes += sw.sweep_passes(
                        model, f"after best: instructed and steered ({s}>{t})", asked, 1, **gen
                    )
                passes += st.metrics_passes(
                    model, f"after best: scoring ({s}>{t})",
                    wrap(model, prompts[t], config.template),
                    2 + ("prompt" in config.arms), plain_among_answers=False, **scoring,
                )  # fmt: skip
    for x in config.confusion_langs():
        wrapped = wrap(model, prompts[x], config.template)
        if vector and x in config.targets:
            n = sum(s != x for s in config.sources)
            passes += sw.sweep_passes(model, f"after best: monolingual ({x})", wrapped, n, **gen)
    return Workload(tuple(passes), held=held)


def neuron_held(model: LoadedModel, passes) -> int:
    """One batch's ``mlp_act`` values at every block, recorded and stacked (two copies)."""
    cells = max(
        (len(p.lengths[i : i + p.batch_size]) * max(p.lengths[i : i + p.batch_size])
         for p in passes for i in range(0, len(p.lengths), p.batch_size)),
        default=0,
    )  # fmt: skip
    width = site_width(model, parse_sites(model, "mlp_act.0")[0])
    value = next(model.hf.parameters()).element_size()
    return held_vectors(2 * model.n_blocks * cells * width * value, model.d_model)


@register(
    NAME,
    SteeringConfig,
    "output-language steering (vector, neurons, prompting) and language confusion",
    workload=workload,
)
def run(config: SteeringConfig) -> Path:
    """Run the experiment; returns the result directory."""
    seed_everything(config.seed)
    prompts = _prompt_texts(config)
    sentences, parallel_source = _parallel(config)
    model = config.load_model()
    layers = _layers(config, model.n_layers)
    _check_lengths(model, config, prompts, sentences)
    out = ResultDir(NAME, config)
    sweep = Sweep(model, config, prompts, layers)
    if "vector" in config.arms:
        langs = config.vector_langs()
        acts = parallel_activations(
            model, {lang: sentences[lang] for lang in langs}, pooling="mean",
            batch_size=config.batch_size, store=ActivationStore(config.store),
        )  # fmt: skip
        sweep.vectors = st.steering_vectors(st.language_means(acts))
        sweep.vector_langs = langs
    n_neurons = {}
    if "neurons" in config.arms:
        probs, _ = nrn.activation_probability(model, sentences, batch_size=config.batch_size)
        mask = nrn.select_language_neurons(
            probs, top_rate=config.top_rate, filter_rate=config.filter_rate,
            bar_rate=config.bar_rate,
        )  # fmt: skip
        sweep.neuron_mask = dict(zip(config.langs, mask))
        texts = {t: sentences[t] for t in config.targets}
        means = st.neuron_means(model, texts, batch_size=config.batch_size)
        sweep.neuron_values = dict(zip(config.targets, means))
        n_neurons = {t: int(sweep.neuron_mask[t].sum()) for t in config.targets}
    for source in config.sources:
        sweep.run_source(source)
    confusion = sweep.confusion()
    outputs.write_tables(out, config, sweep, layers, confusion)
    prompts_source = f"freeform (sha256 {dataset_sha256('freeform')[:12]})"
    metrics = outputs.metrics(
        config, sweep, layers, confusion, parallel_source, prompts_source, n_neurons
    )
    metrics["controls"] = outputs.controls(out, config, sweep)
    out.metrics(metrics)
    out.report("Output-language steering and language confusion", __doc__.split("\n\n")[1], metrics)
    return out.commit()


def _check_lengths(model: LoadedModel, config: SteeringConfig, prompts: dict, sentences: dict):
    """Every prompt, with its instruction and the answer, and every parallel sentence fit."""
    for lang, records in prompts.items():
        asked = wrap(model, records, config.template, target=lang)
        model.check_context(
            [len(ids) + config.max_new_tokens for ids in model.tokenize(asked)],
            lambda i, records=records: (
                f"freeform prompt {records[i].id} ({records[i].lang}), "
                f"with its instruction and max_new_tokens={config.max_new_tokens},"
            ),
            remedy="lower max_new_tokens",
        )
    for lang, lines in sentences.items():
        model.check_context(
            [len(ids) for ids in model.tokenize(lines)],
            lambda i, lang=lang: f"parallel sentence {i + 1} ({lang})",
            remedy="shorten that sentence, or drop its line from every file",
        )
