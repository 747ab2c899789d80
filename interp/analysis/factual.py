"""Factual recall by candidate ranking: teacher-forced log-probs of every candidate answer.

A fact in one language is a ``FactPrompt``: a prompt that ends right before the answer, the gold
answer (and aliases) and the candidates it competes with. ``candidate_logprobs`` scores each
candidate as the sum of its tokens' log-probabilities after the prompt; ``rank_candidates`` turns
those scores into the gold answer's rank, its best wrong competitor (the counterfactual) and the
full ranking.

The prompt prefix runs once per prompt. A batch of prompts runs once with a KV cache; the cache
rows are then gathered once per candidate, and every candidate's tokens but its last run in one
more padded pass on top of it (a one-token candidate needs no second pass: its log-prob is read
from the prompt's last position). Both passes call the Hugging Face model's own forward, so edits
held with ``interp.intervene`` apply; an edit that addresses positions counted from the end
(``Patch``, ``Add(positions=...)``) addresses the prompt's positions, as in cached generation.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.data.languages import LANGUAGES
from interp.errors import PolylensError
from interp.model.batching import pad_batch
from interp.model.footprint import Pass
from interp.model.models import LoadedModel

__all__ = [
    "CandidateRanking",
    "FactPrompt",
    "answer_matches",
    "candidate_logprobs",
    "candidate_passes",
    "continuation",
    "generation_correct",
    "prior_correct",
    "prior_inputs",
    "rank_candidates",
]


@dataclass(frozen=True)
class FactPrompt:
    """One fact in one language, as a prompt to complete and the answers it may take."""

    fact_id: str
    """The same id in every language (the fact, not its wording)."""
    lang: str
    relation: str
    prompt: str
    """The text right before the answer (no trailing space needed; see ``continuation``)."""
    answer: str
    aliases: tuple[str, ...]
    """Other answers that count as correct in generation (e.g. a currency's ISO code)."""
    candidates: tuple[str, ...]
    """The answers ranked, the gold ``answer`` among them."""
    candidate_keys: tuple[str, ...] = ()
    """One key per candidate naming the concept across languages (the same key is the same
    answer in every language: e.g. an object code); empty means the candidates' positions."""

    def __post_init__(self) -> None:
        if self.answer not in self.candidates:
            raise PolylensError(
                f"fact {self.fact_id} ({self.lang}): the answer {self.answer!r} is not among "
                "its candidates; candidates must include the gold answer"
            )
        if len(set(self.candidates)) != len(self.candidates):
            raise PolylensError(
                f"fact {self.fact_id} ({self.lang}) has duplicate candidates; deduplicate them"
            )
        if self.candidate_keys and len(self.candidate_keys) != len(self.candidates):
            raise PolylensError(
                f"fact {self.fact_id} ({self.lang}) has {len(self.candidate_keys)} candidate keys "
                f"for {len(self.candidates)} candidates; give one key per candidate"
            )

    @property
    def keys(self) -> tuple[str, ...]:
        """The candidates' cross-language keys (their positions when none were given)."""
        return self.candidate_keys or tuple(str(j) for j in range(len(self.candidates)))


def continuation(prompt: str, answer: str, lang: str) -> str:
    """The text scored after ``prompt``: a space first where the language separates words.

    Chinese, Japanese and Thai write no space before the answer; a prompt that already ends in
    whitespace gets none either. Unknown languages are treated as spaced.
    """
    spaced = LANGUAGES[lang].spaces if lang in LANGUAGES else True
    return (" " if spaced and prompt and not prompt[-1].isspace() else "") + answer


def _select_rows(cache, index: Tensor):
    """A copy of ``cache`` holding rows ``index`` (repeats allowed); ``cache`` is left as is.

    The layers are copied shallowly: selecting rows builds new key/value tensors, so nothing is
    duplicated beyond the rows asked for.
    """
    rows = copy.copy(cache)
    rows.layers = [copy.copy(layer) for layer in cache.layers]
    rows.batch_select_indices(index)
    return rows


@torch.inference_mode()
def candidate_logprobs(
    model: LoadedModel,
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    *,
    batch_size: int = 16,
    memory_budget_mb: float = 512,
) -> list[Float[Tensor, " candidate"]]:
    """Sum of the log-probs of each candidate's tokens after its prompt (teacher-forced).

    Args:
        model: the model; its own forward runs (edits held by ``intervene`` apply).
        prompts: the texts before the answers; tokenized with the tokenizer's special tokens.
        candidates: per prompt, the continuations to score, verbatim (leading space included
            where wanted: see ``continuation``); tokenized without special tokens.
        batch_size: prompts per prefix pass.
        memory_budget_mb: the most memory the vocabulary-sized logits of the candidate pass
            may take at once (candidate rows are chunked to fit).

    Returns:
        Per prompt, a float32 CPU tensor with one log-prob per candidate, in the order given.
    """
    model.require_next_token("factual candidate scoring")
    if batch_size < 1 or memory_budget_mb <= 0:
        raise PolylensError("candidate scoring needs batch_size >= 1 and memory_budget_mb > 0")
    prompt_ids = model.tokenize(prompts)
    cand_ids = _candidate_ids(model, prompts, candidates)
    pad = model.tokenizer.pad_token_id
    cells = _logit_cells(model, memory_budget_mb)
    out: list[Tensor] = []
    for start in range(0, len(prompts), batch_size):
        rows = list(range(start, min(start + batch_size, len(prompts))))
        batch = pad_batch([prompt_ids[i] for i in rows], pad, model.device)
        prefix = model.hf(**batch, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(prefix.logits[:, -1].float(), dim=-1)
        owner = [b for b, i in enumerate(rows) for _ in cand_ids[i]]
        seqs = [ids for i in rows for ids in cand_ids[i]]
        owner_t = torch.tensor(owner, device=first.device)
        heads = torch.tensor([s[0] for s in seqs], device=first.device)
        scores = first[owner_t, heads]
        # Longest first, so that each chunk holds similar lengths (little padding to decode).
        longer = sorted((k for k, s in enumerate(seqs) if len(s) > 1), key=lambda k: -len(seqs[k]))
        c0 = 0
        while c0 < len(longer):
            width = len(seqs[longer[c0]]) - 1
            part = longer[c0 : c0 + max(1, cells // width)]
            scores[part] += _tail_logprobs(
                model, prefix.cache, batch, [owner[k] for k in part],
                [seqs[k] for k in part], pad,
            )  # fmt: skip
            c0 += len(part)
        scores = scores.cpu()
        at = 0
        for i in rows:
            out.append(scores[at : at + len(cand_ids[i])].clone())
            at += len(cand_ids[i])
    return out


def _candidate_ids(
    model: LoadedModel, prompts: Sequence[str], candidates: Sequence[Sequence[str]]
) -> list[list[list[int]]]:
    """Per prompt, each candidate's token ids (no special tokens); empty ones refused."""
    if len(prompts) != len(candidates):
        raise PolylensError(f"got {len(prompts)} prompts but candidates for {len(candidates)}")
    cand_ids: list[list[list[int]]] = []
    for p, cands in enumerate(candidates):
        if not cands:
            raise PolylensError(f"prompt {p} has no candidates; give at least one")
        ids = model.tokenizer(list(cands), add_special_tokens=False)["input_ids"]
        empty = [c for c, t in zip(cands, ids) if not t]
        if empty:
            raise PolylensError(f"prompt {p}: candidate {empty[0]!r} has no tokens; drop it")
        cand_ids.append(ids)
    return cand_ids


def _logit_cells(model: LoadedModel, memory_budget_mb: float) -> int:
    """Candidate positions decoded at once: logits and log-softmax, two float32 vocab rows each."""
    return max(1, int(memory_budget_mb * 2**20 // (2 * 4 * model.unembed.weight.shape[0])))


def candidate_passes(
    model: LoadedModel,
    name: str,
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    *,
    batch_size: int = 16,
    memory_budget_mb: float = 512,
    repeats: int = 1,
) -> tuple[Pass, ...]:
    """The forward passes ``candidate_logprobs`` makes, for ``polylens plan``.

    Every prompt once (logits at its last token), then every candidate's tokens but its last on
    its prompt's cached keys and values (logits at every position; none for one-token
    candidates). ``repeats``: how many times the same scoring runs (e.g. once per edit).
    """
    prompt_ids = model.tokenize(prompts)
    cand_ids = _candidate_ids(model, prompts, candidates)
    tails = []
    for start in range(0, len(prompts), batch_size):
        seqs = [ids for cands in cand_ids[start : start + batch_size] for ids in cands]
        tails += sorted((len(s) - 1 for s in seqs if len(s) > 1), reverse=True)
    rows = max(1, _logit_cells(model, memory_budget_mb) // max(tails, default=1))
    lengths = tuple(len(ids) for ids in prompt_ids)
    passes = [Pass(f"{name}: prompts", lengths, batch_size, logits="last", repeats=repeats)]
    if tails:
        passes.append(
            Pass(f"{name}: answer tokens", tuple(tails), rows, logits="all", repeats=repeats)
        )
    return tuple(passes)


def _tail_logprobs(
    model: LoadedModel,
    cache,
    batch: dict[str, Tensor],
    owner: list[int],
    seqs: list[list[int]],
    pad: int,
) -> Float[Tensor, " row"]:
    """Summed log-probs of tokens 2.. of each sequence, run on its prompt's cached prefix.

    Inputs are each sequence but its last token, right-padded: causal attention keeps the padding
    after every real token out of what the real tokens see, and the mask keeps it out of the keys.
    """
    device = batch["input_ids"].device
    index = torch.tensor(owner, device=device)
    width = max(len(s) for s in seqs) - 1
    inputs = torch.full((len(seqs), width), pad, dtype=torch.long)
    targets = torch.zeros((len(seqs), width), dtype=torch.long)
    valid = torch.zeros((len(seqs), width), dtype=torch.bool)
    for r, s in enumerate(seqs):
        n = len(s) - 1
        inputs[r, :n] = torch.tensor(s[:-1])
        targets[r, :n] = torch.tensor(s[1:])
        valid[r, :n] = True
    inputs, targets, valid = inputs.to(device), targets.to(device), valid.to(device)
    prompt_mask = batch["attention_mask"][index]
    start = prompt_mask.sum(-1, keepdim=True)  # positions count real tokens only
    step = torch.arange(width, device=device).unsqueeze(0)
    out = model.hf(
        input_ids=inputs,
        attention_mask=torch.cat([prompt_mask, valid.long()], dim=1),
        position_ids=start + step,
        cache=_select_rows(cache, index),
        use_cache=True,
    )
    logits = out.logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    return picked.masked_fill(~valid, 0.0).sum(-1)


@dataclass
class CandidateRanking:
    """Per fact: the candidates' log-probs, the gold answer's rank and its best competitor."""

    facts: list[FactPrompt]
    logprobs: list[Float[Tensor, " candidate"]]
    """Per fact, one summed log-prob per candidate, in ``fact.candidates`` order."""
    gold_rank: Int[Tensor, " fact"]
    """Wrong candidates scoring at least as high as the gold answer (0 = gold strictly best)."""
    gold_logprob: Float[Tensor, " fact"]
    best_wrong: list[str | None]
    """The highest-scoring wrong candidate (the counterfactual); None for a lone candidate."""
    best_wrong_logprob: Float[Tensor, " fact"]
    """Its log-prob (-inf when the fact has no wrong candidate)."""
    ranking: list[tuple[str, ...]]
    """Per fact, the candidates best first (ties kept in candidate order)."""

    @property
    def correct(self) -> Tensor:
        """Gold rank 0, per fact (bool)."""
        return self.gold_rank == 0

    @property
    def margin(self) -> Float[Tensor, " fact"]:
        """Gold log-prob minus the counterfactual's: > 0 exactly when the gold ranks first."""
        return self.gold_logprob - self.best_wrong_logprob


def rank_candidates(
    model: LoadedModel,
    facts: Sequence[FactPrompt],
    *,
    batch_size: int = 16,
    memory_budget_mb: float = 512,
) -> CandidateRanking:
    """Rank every fact's candidates by summed log-prob after its prompt.

    Each candidate is scored as ``continuation(fact.prompt, candidate, fact.lang)``. A tie with
    the gold counts against it, so rank 0 means the gold answer is strictly the most probable.
    """
    facts = list(facts)
    conts = [[continuation(f.prompt, c, f.lang) for c in f.candidates] for f in facts]
    logprobs = candidate_logprobs(
        model,
        [f.prompt for f in facts],
        conts,
        batch_size=batch_size,
        memory_budget_mb=memory_budget_mb,
    )
    ranks, gold_lp, wrong, wrong_lp, ranking = [], [], [], [], []
    for f, lp in zip(facts, logprobs):
        g = f.candidates.index(f.answer)
        others = torch.ones(len(lp), dtype=torch.bool)
        others[g] = False
        ranks.append(int((lp[others] >= lp[g]).sum()))
        gold_lp.append(float(lp[g]))
        if others.any():
            w = int(torch.where(others, lp, -torch.inf).argmax())
            wrong.append(f.candidates[w])
            wrong_lp.append(float(lp[w]))
        else:
            wrong.append(None)
            wrong_lp.append(-torch.inf)
        order = torch.sort(lp, descending=True, stable=True).indices.tolist()
        ranking.append(tuple(f.candidates[i] for i in order))
    return CandidateRanking(
        facts,
        logprobs,
        torch.tensor(ranks, dtype=torch.long),
        torch.tensor(gold_lp),
        wrong,
        torch.tensor(wrong_lp),
        ranking,
    )


def answer_matches(text: str, answers: Sequence[str]) -> bool:
    """Whether the stripped ``text`` starts with one of ``answers`` (case-insensitive)."""
    head = text.strip().casefold()
    return any(head.startswith(a.strip().casefold()) for a in answers if a.strip())


def generation_correct(
    model: LoadedModel,
    facts: Sequence[FactPrompt],
    *,
    max_new_tokens: int = 8,
    batch_size: int = 16,
) -> tuple[list[str], Tensor]:
    """Greedy continuations of the facts' prompts (up to a newline) and whether each is right.

    Right means the answer or an alias starts the continuation, after stripping, ignoring case.
    """
    # Cut at the newline here rather than with generate's stop strings: transformers builds its
    # stop-string tables over the whole vocabulary for every batch (seconds for Gemma's 262k).
    texts = model.generate(
        [f.prompt for f in facts], max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    texts = [t.split("\n", 1)[0] for t in texts]
    correct = [answer_matches(t, (f.answer, *f.aliases)) for t, f in zip(texts, facts)]
    return texts, torch.tensor(correct, dtype=torch.bool)


def prior_inputs(
    model: LoadedModel, facts: Sequence[FactPrompt]
) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """``prior_correct``'s neutral prompts, their languages and each language's candidates."""
    neutral = "" if model.tokenize([""])[0] else "\n"
    distinct = sorted({(f.lang, c) for f in facts for c in f.candidates})
    by_lang: dict[str, list[str]] = {}
    for lang, c in distinct:
        by_lang.setdefault(lang, []).append(c)
    langs = sorted(by_lang)
    return [neutral] * len(langs), langs, by_lang


def prior_correct(
    model: LoadedModel, facts: Sequence[FactPrompt], *, batch_size: int = 16
) -> Tensor:
    """The candidate-frequency control: is the gold the candidate most probable with no prompt?

    Every distinct candidate of a language is scored once after a neutral prompt (the tokenizer's
    special tokens alone, or a newline for a tokenizer that adds none), with no leading space; a
    fact counts as correct when its gold strictly beats its other candidates there. Accuracy
    above this baseline is recall beyond the answers' prior.
    """
    prompts, langs, by_lang = prior_inputs(model, facts)
    scores = candidate_logprobs(model, prompts, [by_lang[x] for x in langs], batch_size=batch_size)
    prior = {
        (lang, c): float(s) for lang, lp in zip(langs, scores) for c, s in zip(by_lang[lang], lp)
    }
    out = []
    for f in facts:
        gold = prior[(f.lang, f.answer)]
        out.append(all(prior[(f.lang, c)] < gold for c in f.candidates if c != f.answer))
    return torch.tensor(out, dtype=torch.bool)
