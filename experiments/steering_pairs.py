"""language-steering's generations and scores, pair by pair (``experiments.language_steering``).

``Sweep`` holds what the result is made of: per (source, target) pair, one ``summarize`` row per
setting, the best setting of each arm, every answer with its metrics, and the language-confusion
rows of plain and steered answers. Every answer of a pair is scored after the target-language
version of its prompt, and the pair's ``native`` row (the model's own answers to those prompts)
is the fluency the best setting must stay near. The library does the work
(``interp.analysis.steering``, ``steering_sweep``, ``confusion``); this wires it for the
experiment's config.
"""

from __future__ import annotations

import math

from experiments.base import ExperimentConfig
from interp.analysis import steering as st
from interp.analysis import steering_sweep as sw
from interp.analysis.confusion import answer_confusion, confusion_rates
from interp.analysis.language_id import detect_languages
from interp.model.models import LoadedModel


def wrap(model: LoadedModel, records, template: str, target: str | None = None) -> list[str]:
    """The prompts as generated from: plain or chat, asking for ``target`` (the prompting arm)."""
    texts = [r.text for r in records]
    if target is not None:
        texts = st.instructed(texts, target)
    if template == "chat":
        return model.apply_chat_template(texts)
    ends = ["\n" if target is not None or r.kind == "question" else "" for r in records]
    return [t + end for t, end in zip(texts, ends)]


def stop_strings(model: LoadedModel, template: str) -> list[str]:
    """Strings that end an answer: the end of the turn in a chat (a plain answer runs on)."""
    eos = model.tokenizer.eos_token
    return [eos] if template == "chat" and eos else []


class Sweep:
    """The generations and their scores, pair by pair: what the tables and metrics read.

    ``config`` is a ``language_steering.SteeringConfig``.
    """

    def __init__(self, model: LoadedModel, config: ExperimentConfig, prompts: dict, layers):
        self.model, self.config, self.prompts, self.layers = model, config, prompts, layers
        self.vectors = None
        """``[source, target, layer, d_model]`` over ``vector_langs`` (``steering_vectors``)."""
        self.vector_langs: list[str] = []
        self.neuron_mask: dict = {}
        self.neuron_values: dict = {}
        self.rows: dict[tuple[str, str], list[dict]] = {}
        """Per pair, one ``summarize`` row per setting (``source`` and ``target`` first)."""
        self.best: dict[tuple[str, str], dict[str, dict | None]] = {}
        self.answers: list[dict] = []
        """One row per answer: its setting, prompt, text, language and metrics."""
        self.plain: dict[str, list[str]] = {}
        """Unsteered answers to each language's own prompts (sources and targets)."""
        self.asked: dict[tuple[str, str], list[str]] = {}
        """The prompting arm's answers: the source's prompts asking for the target."""
        self.asked_steered: dict[tuple[str, str], tuple[str, list[str]]] = {}
        """The same prompts with the vector added at the best layer: (its label, answers)."""

    def vector(self, source: str, target: str):
        """The vector from ``source`` towards ``target`` at every layer."""
        at = self.vector_langs.index
        return self.vectors[at(source), at(target)]

    def generate(self, prompts: list[str], settings: list, label: str) -> list[list[str]]:
        """Greedy answers of every setting, stacked (``generate_stacked``)."""
        config = self.config
        return sw.generate_stacked(
            self.model, prompts, settings, max_new_tokens=config.max_new_tokens,
            stop=stop_strings(self.model, config.template), batch_size=config.batch_size,
            rows_per_pass=config.rows_per_pass, progress=label,
        ).texts  # fmt: skip

    def run_source(self, s: str) -> None:
        """The sweep of one source's prompts, the prompting arm, then the controls."""
        config, arms = self.config, self.config.arms
        targets = [t for t in config.targets if t != s]
        wrapped = wrap(self.model, self.prompts[s], config.template)
        # The unsteered answers ride in the sweep unless s was a target of an earlier source.
        fresh = s not in self.plain
        settings, owned = [sw.Setting("none")] if fresh else [], {}
        for t in targets:
            start = len(settings)
            if "vector" in arms:
                settings += sw.vector_settings(
                    "vector", self.vector(s, t), self.layers, config.coeffs, label=f"{s}>{t}"
                )
            if "neurons" in arms:
                off = self.neuron_mask[s] if config.deactivate_source else None
                settings += sw.neuron_settings(
                    self.neuron_mask[t], self.neuron_values[t], config.neuron_coeffs,
                    deactivate=off,
                )  # fmt: skip
            owned[t] = range(start, len(settings))
        texts = self.generate(wrapped, settings, f"{s}: sweep") if settings else []
        if fresh:
            self.plain[s] = texts[0]
        for t in targets:
            self.plain_answers(t)
        n = len(wrapped)
        if "prompt" in arms:
            asked = [p for t in targets for p in wrap(self.model, self.prompts[s],
                     config.template, t)]  # fmt: skip
            (got,) = self.generate(asked, [sw.Setting("prompt")], f"{s}: prompting arm")
            for k, t in enumerate(targets):
                self.asked[(s, t)] = got[k * n : (k + 1) * n]
        for t in targets:
            mine = [sw.Setting("none"), sw.Setting("native", label=t)]
            mine += [settings[i] for i in owned[t]]
            answers = [self.plain[s], self.plain[t], *(texts[i] for i in owned[t])]
            if "prompt" in arms:
                mine.append(sw.Setting("prompt", label=f"{s}>{t}"))
                answers.append(self.asked[(s, t)])
            self.rows[(s, t)] = self.score(s, t, mine, answers)
            self.best[(s, t)] = best_of(config, self.rows[(s, t)])
        if "vector" in arms:
            self.controls(s, targets, wrapped)

    def plain_answers(self, lang: str) -> list[str]:
        """The unsteered answers to ``lang``'s own prompts, generated once."""
        if lang not in self.plain:
            wrapped = wrap(self.model, self.prompts[lang], self.config.template)
            (self.plain[lang],) = self.generate(wrapped, [sw.Setting("none")], f"{lang}: plain")
        return self.plain[lang]

    def controls(self, s: str, targets: list[str], wrapped: list[str]) -> None:
        """At each pair's best vector setting: a random direction of the same norm, the vector
        of an unrelated language, and (with the prompting arm) the instruction plus the vector."""
        config = self.config
        chosen = [(t, self.best[(s, t)]["vector"]) for t in targets]
        chosen = [(t, b) for t, b in chosen if b is not None]
        settings = []
        for t, b in chosen:
            layer, coeff, v = b["layer"], b["coeff"], self.vector(s, t)
            random = st.random_control(v, seed=config.seed)[layer]
            lang, u = st.unrelated_control(
                self.vectors, self.vector_langs, s, t, config.unrelated_for(s, t)
            )
            settings += [
                sw.Setting("random", layer=layer, coeff=coeff, vector=random, label=f"{s}>{t}"),
                sw.Setting("unrelated", layer=layer, coeff=coeff, vector=u[layer], label=lang),
            ]
        if not settings:
            return
        texts = self.generate(wrapped, settings, f"{s}: controls")
        for k, (t, b) in enumerate(chosen):
            mine, answers = settings[2 * k : 2 * k + 2], texts[2 * k : 2 * k + 2]
            if "prompt" in config.arms:
                both = sw.Setting(
                    "prompt+vector", layer=b["layer"], coeff=b["coeff"],
                    vector=self.vector(s, t)[b["layer"]], label=f"{s}>{t}",
                )  # fmt: skip
                asked = wrap(self.model, self.prompts[s], config.template, t)
                (got,) = self.generate(asked, [both], f"{s}>{t}: instructed and steered")
                self.asked_steered[(s, t)] = (edit_label(b, s, t), got)
                mine, answers = [*mine, both], [*answers, got]
            self.rows[(s, t)] += self.score(s, t, mine, answers)

    def score(self, s: str, t: str, settings, answers) -> list[dict]:
        """``summarize`` rows of one pair's settings; every answer kept for ``answers.csv``.

        Fluency reads each answer after the target-language version of its prompt."""
        config = self.config
        asked_in_target = wrap(self.model, self.prompts[t], config.template)
        m = st.steering_metrics(
            self.model, asked_in_target, answers, self.plain[s], t, batch_size=config.batch_size
        )
        found = detect_languages([a for row in answers for a in row])
        n = len(asked_in_target)
        for i, (setting, row) in enumerate(zip(settings, answers)):
            # The native answers were asked in the target language; the rest in the source.
            records = self.prompts[t] if setting.arm == "native" else self.prompts[s]
            for j, (record, answer) in enumerate(zip(records, row)):
                self.answers.append(
                    {"source": s, "target": t, **setting.describe(), "prompt_id": record.id}
                    | {"prompt": record.text, "answer": answer}
                    | {"answer_language": found[i * n + j] or ""}
                    | {k: float(m[k][i, j]) for k in st.METRICS}
                )
        summary = st.summarize(settings, m, n_boot=config.n_boot, seed=config.seed)
        return [{"source": s, "target": t, **row} for row in summary]

    def confusion(self) -> list[dict]:
        """LCB's rates of plain answers to monolingual and cross-lingual prompts, and of the same
        prompts steered at the best layer; a steered row carries its plain row's LPR."""
        config, rows = self.config, []
        for x in config.confusion_langs():
            settings, labels = [], []
            if "vector" in config.arms and x in config.targets:
                for s in config.sources:
                    b = self.best.get((s, x), {}).get("vector")
                    if s != x and b is not None:
                        settings.append(
                            sw.Setting("vector", layer=b["layer"], coeff=b["coeff"],
                                       vector=self.vector(s, x)[b["layer"]], label=f"{s}>{x}")
                        )  # fmt: skip
                        labels.append(edit_label(b, s, x))
            wrapped = wrap(self.model, self.prompts[x], config.template)
            steered = self.generate(wrapped, settings, f"{x}: monolingual") if settings else []
            plain_row = confusion_row(config, "monolingual", x, x, "none", self.plain_answers(x))
            rows.append(plain_row)
            rows += [
                confusion_row(config, "monolingual", x, x, label, answers, plain_row)
                for label, answers in zip(labels, steered)
            ]
        for pair in config.pairs:
            if pair in self.asked:
                plain_row = confusion_row(config, "cross-lingual", *pair, "none", self.asked[pair])
                rows.append(plain_row)
                if pair in self.asked_steered:
                    label, answers = self.asked_steered[pair]
                    rows.append(
                        confusion_row(config, "cross-lingual", *pair, label, answers, plain_row)
                    )
        return rows


def edit_label(best: dict, source: str, target: str) -> str:
    """How a table names the best vector setting of a pair."""
    return f"vector {source}>{target} at layer {best['layer']} x{best['coeff']:g}"


def best_of(config: ExperimentConfig, rows: list[dict]) -> dict[str, dict | None]:
    """The unsteered and native rows, the best vector and neuron settings, the prompting arm's."""
    native = next(r for r in rows if r["arm"] == "native")
    # No native answer scored (all empty): no fluency to stay near.
    ref = native if native["fluency"] is not None else native | {"fluency": -math.inf}
    best: dict[str, dict | None] = {"none": next(r for r in rows if r["arm"] == "none")}
    best["native"] = native
    for arm in ("vector", "neurons"):
        if arm in config.arms:
            best[arm] = st.best_setting(
                rows, arm=arm, reference=ref, tolerance=config.tolerance,
                repetition_tolerance=config.repetition_tolerance,
            )  # fmt: skip
    if "prompt" in config.arms:
        best["prompt"] = next(r for r in rows if r["arm"] == "prompt")
    return best


def confusion_row(config, condition, prompt_lang, asked, edit, answers, plain=None) -> dict:
    """LCB's rates of ``answers`` asked in ``asked``; with ``plain``, its plain twin's LPR."""
    rates = confusion_rates(
        answer_confusion(answers, asked), n_boot=config.n_boot, seed=config.seed
    )
    row = {"condition": condition, "prompt_lang": prompt_lang, "asked_lang": asked}
    row |= {"edit": edit, **rates, "plain_lpr": None, "drifts": None, "lpr_change": None}
    if plain is not None:  # a steered row: how its plain twin fared
        row["plain_lpr"] = plain["lpr"]
        row["drifts"] = None if plain["lpr"] is None else plain["lpr"] < 1
        if plain["lpr"] is not None and rates["lpr"] is not None:
            row["lpr_change"] = rates["lpr"] - plain["lpr"]
    return row
