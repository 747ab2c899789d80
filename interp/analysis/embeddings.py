"""Token-embedding geometry by script (after "Hyperpolyglot LLMs").

- ``token_scripts``: the Unicode script of every vocabulary token (its letters' script; ``none``
  for tokens without letters, ``mixed`` for several scripts, ``special`` for special tokens).
- ``script_separability``: held-out accuracy of a linear (multinomial logistic) classifier of
  the script from a token's embedding row, per script.
- ``neighbour_diversity``: for tokens of script S, the share of their nearest tokens (cosine,
  over the whole vocabulary) written in another script.
- ``translation_neighbours``: whether a word's translation (single-token forms of the bundled
  ``words``) is among the nearest tokens of the word, per language pair.

Nearest neighbours are found in chunks of vocabulary rows with a running top-k, so memory stays
``queries x chunk`` whatever the vocabulary size (Gemma 3: 262,144 rows).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import PolylensError

__all__ = [
    "Separability",
    "nearest_tokens",
    "neighbour_diversity",
    "script_of",
    "script_counts",
    "script_separability",
    "single_token_words",
    "token_scripts",
    "translation_neighbours",
    "neighbour_scripts_by_language",
    "word_neighbours",
]

NO_SCRIPT = ("none", "mixed", "special")
"""Labels that are not one script."""

_RENAME = {"CJK": "Han", "HIRAGANA": "Kana", "KATAKANA": "Kana", "KATAKANA-HIRAGANA": "Kana"}
_WIDTH = ("FULLWIDTH", "HALFWIDTH")


@cache
def _char_script(ch: str) -> str | None:
    """The script of a letter or combining mark (first word of its Unicode name), else None."""
    if not unicodedata.category(ch).startswith(("L", "M")):
        return None
    words = unicodedata.name(ch, "").split()
    if words and words[0] in _WIDTH:
        words = words[1:]
    if not words or words[0] == "COMBINING":
        return None  # script-neutral marks
    return _RENAME.get(words[0], words[0].capitalize())


def script_of(text: str) -> str:
    """The script of a token's text: ``Latin``, ``Cyrillic``, ``Han``, ``Kana``, ``Hangul``, ...

    ``none`` when it has no letters (digits, punctuation, spaces, byte fragments), ``mixed`` when
    its letters come from several scripts.
    """
    scripts = {s for s in map(_char_script, text) if s is not None}
    if not scripts:
        return "none"
    return scripts.pop() if len(scripts) == 1 else "mixed"


def token_scripts(tokenizer) -> list[str]:
    """The script of every token id of ``tokenizer`` (``special`` for its special tokens)."""
    n = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(n)])
    special = set(tokenizer.all_special_ids)
    return ["special" if i in special else script_of(t) for i, t in enumerate(texts)]


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def nearest_tokens(
    queries: Float[Tensor, "query d"],
    table: Float[Tensor, "vocab d"],
    k: int,
    *,
    exclude: Int[Tensor, " query"] | None = None,
    chunk: int = 16384,
) -> Int[Tensor, "query k"]:
    """Ids of the ``k`` rows of ``table`` nearest (cosine) to each query, best first.

    Args:
        queries: query vectors.
        table: the vocabulary (embedding or unembedding rows).
        k: neighbours per query.
        exclude: one row id per query to leave out (the query token itself).
        chunk: rows of ``table`` per step: memory is ``query x chunk`` similarities.
    """
    k = min(k, len(table) - (exclude is not None))
    q = _unit(queries.float())
    best_val = q.new_full((len(q), k), -torch.inf)
    best_idx = torch.zeros(len(q), k, dtype=torch.long, device=q.device)
    for start in range(0, len(table), chunk):
        rows = _unit(table[start : start + chunk].to(q.device, torch.float32))
        sims = q @ rows.T
        if exclude is not None:
            local = exclude.to(q.device) - start
            hit = (local >= 0) & (local < len(rows))
            sims[hit.nonzero().squeeze(-1), local[hit]] = -torch.inf
        ids = torch.arange(start, start + len(rows), device=q.device).expand(len(q), -1)
        val, pos = torch.cat([best_val, sims], 1).topk(min(k, best_val.shape[1] + len(rows)), 1)
        best_idx = torch.cat([best_idx, ids], 1).gather(1, pos)
        best_val = val
    return best_idx


def _sample_by_script(
    scripts: Sequence[str], per_script: int, min_tokens: int, seed: int
) -> dict[str, Tensor]:
    """Up to ``per_script`` random token ids of every script with ``min_tokens`` tokens or more."""
    gen = torch.Generator().manual_seed(seed)
    by_script: dict[str, list[int]] = {}
    for i, s in enumerate(scripts):
        if s not in NO_SCRIPT:
            by_script.setdefault(s, []).append(i)
    out = {}
    for s, ids in sorted(by_script.items(), key=lambda kv: -len(kv[1])):
        if len(ids) >= min_tokens:
            ids_t = torch.tensor(ids)
            out[s] = ids_t[torch.randperm(len(ids), generator=gen)[:per_script]]
    return out


@torch.no_grad()
def neighbour_diversity(
    table: Float[Tensor, "vocab d"],
    scripts: Sequence[str],
    *,
    k: int = 50,
    per_script: int = 200,
    min_tokens: int = 200,
    seed: int = 0,
    chunk: int = 16384,
) -> dict[str, dict[str, float]]:
    """Per script: the share of each token's ``k`` nearest tokens written in another script.

    Another script means a letter script other than the token's own (``none``, ``mixed`` and
    ``special`` neighbours do not count as another script). ``chance`` is the share a random
    token of the vocabulary would have.

    Returns:
        ``{script: {"other_script": share, "same_script": share, "chance": share, "n": n}}``.
    """
    labels = sorted(set(scripts))
    index = {s: i for i, s in enumerate(labels)}
    codes = torch.tensor([index[s] for s in scripts])
    counts = torch.bincount(codes, minlength=len(labels)).float()
    letters = torch.tensor([s not in NO_SCRIPT for s in labels])
    sample = _sample_by_script(scripts, per_script, min_tokens, seed)
    if not sample:
        raise PolylensError(f"no script has {min_tokens} tokens; lower min_tokens")
    ids = torch.cat(list(sample.values()))
    neighbours = nearest_tokens(table[ids], table, k, exclude=ids, chunk=chunk)
    ncode = codes[neighbours.cpu()]
    out, start = {}, 0
    for s, members in sample.items():
        block = ncode[start : start + len(members)]
        start += len(members)
        own = index[s]
        other = letters[block] & (block != own)
        chance = (counts[letters].sum() - counts[own]) / counts.sum()
        out[s] = {
            "other_script": float(other.float().mean()),
            "same_script": float((block == own).float().mean()),
            "chance": float(chance),
            "n": len(members),
        }
    return out


@dataclass
class Separability:
    """Held-out accuracy of a linear script classifier on embedding rows."""

    scripts: list[str]
    per_script: dict[str, float]
    """Held-out recall of each script."""
    balanced_accuracy: float
    chance: float
    """``1 / len(scripts)``."""


def script_separability(
    table: Float[Tensor, "vocab d"],
    scripts: Sequence[str],
    *,
    per_script: int = 1000,
    min_tokens: int = 200,
    test_fraction: float = 0.3,
    steps: int = 200,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> Separability:
    """Train a multinomial logistic classifier of the script on embedding rows; test held out.

    Every script with ``min_tokens`` tokens contributes up to ``per_script`` random tokens, so the
    classes are near balance; rows are standardised with the training split's statistics.
    """
    sample = _sample_by_script(scripts, per_script, min_tokens, seed)
    if len(sample) < 2:
        raise PolylensError(f"fewer than two scripts have {min_tokens} tokens; lower min_tokens")
    names = list(sample)
    gen = torch.Generator().manual_seed(seed)
    train_x, train_y, test_x, test_y = [], [], [], []
    for c, ids in enumerate(sample.values()):
        n_test = max(1, int(len(ids) * test_fraction))
        perm = ids[torch.randperm(len(ids), generator=gen)]
        rows = table[perm].float().cpu()
        test_x.append(rows[:n_test])
        train_x.append(rows[n_test:])
        test_y += [c] * n_test
        train_y += [c] * (len(ids) - n_test)
    xtr, xte = torch.cat(train_x), torch.cat(test_x)
    ytr, yte = torch.tensor(train_y), torch.tensor(test_y)
    mu, sd = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    with torch.enable_grad():
        torch.manual_seed(seed)
        linear = torch.nn.Linear(xtr.shape[1], len(names))
        opt = torch.optim.LBFGS(linear.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(linear(xtr), ytr)
            loss = loss + weight_decay * linear.weight.square().sum()
            loss.backward()
            return loss

        opt.step(closure)
    with torch.no_grad():
        pred = linear(xte).argmax(-1)
    recall = {s: float((pred[yte == c] == c).float().mean()) for c, s in enumerate(names)}
    return Separability(names, recall, sum(recall.values()) / len(recall), 1 / len(names))


def word_neighbours(
    table: Float[Tensor, "vocab d"],
    word_tokens: Mapping[str, Mapping[str, int]],
    *,
    k: int = 50,
    chunk: int = 16384,
) -> dict[int, list[int]]:
    """The ``k`` nearest tokens (cosine, itself left out) of every word token, best first."""
    queries = sorted({t for forms in word_tokens.values() for t in forms.values()})
    if not queries:
        raise PolylensError("no word is a single token in any language")
    q = torch.tensor(queries)
    near = nearest_tokens(table[q], table, k, exclude=q, chunk=chunk).cpu()
    return {tok: row.tolist() for tok, row in zip(queries, near)}


def translation_neighbours(
    table: Float[Tensor, "vocab d"],
    word_tokens: Mapping[str, Mapping[str, int]],
    *,
    k: int = 50,
    chunk: int = 16384,
    neighbours: Mapping[int, Sequence[int]] | None = None,
) -> tuple[list[str], Float[Tensor, "lang lang"], Int[Tensor, "lang lang"]]:
    """Is a word's translation among its ``k`` nearest tokens? Per ordered language pair.

    Args:
        table: embedding (or unembedding) rows.
        word_tokens: ``{concept: {lang: token id}}`` for words that are one token.
        k: neighbours searched.
        chunk: vocabulary rows per step.
        neighbours: ``word_neighbours(table, word_tokens, k=k)`` when already computed.

    Returns:
        ``(langs, hit_rate, n)``: ``hit_rate[a, b]`` is the share of concepts whose ``b`` token
        is among the ``k`` nearest tokens of the ``a`` token, over the ``n[a, b]`` concepts
        that have a single token in both and whose two tokens differ (identical tokens, such as
        水 in Chinese and Japanese, are trivially each other's).
    """
    langs = sorted({lang for forms in word_tokens.values() for lang in forms})
    if neighbours is None:
        neighbours = word_neighbours(table, word_tokens, k=k, chunk=chunk)
    near = {tok: set(ids) for tok, ids in neighbours.items()}
    hits = torch.zeros(len(langs), len(langs))
    n = torch.zeros(len(langs), len(langs), dtype=torch.long)
    for forms in word_tokens.values():
        for a, la in enumerate(langs):
            for b, lb in enumerate(langs):
                if la in forms and lb in forms and forms[la] != forms[lb]:
                    n[a, b] += 1
                    hits[a, b] += forms[lb] in near[forms[la]]
    return langs, hits / n.clamp_min(1), n


def neighbour_scripts_by_language(
    word_tokens: Mapping[str, Mapping[str, int]],
    neighbours: Mapping[int, Sequence[int]],
    scripts: Sequence[str],
) -> dict[str, dict[str, float]]:
    """Per language, the share of each script among the nearest tokens of its word tokens.

    Explains a low translation hit rate: when a language's words have as neighbours mostly
    tokens of languages outside the studied set (in gemma-3-270m, Hindi words' neighbours are
    Bengali and other Indic tokens), its translations into the studied languages are not among
    them, however many of its words are single tokens. Scripts most frequent first.
    """
    found: dict[str, list[str]] = {}
    for forms in word_tokens.values():
        for lang, tok in forms.items():
            found.setdefault(lang, []).extend(scripts[i] for i in neighbours[tok])
    return {
        lang: {s: c / len(near) for s, c in script_counts(near).items()}
        for lang, near in sorted(found.items())
    }


def single_token_words(tokenizer, words: Sequence) -> dict[str, dict[str, int]]:
    """``{concept: {lang: token id}}`` for the bundled ``words`` whose main form is one token.

    Languages written with spaces get the form with a leading space, as it appears in text.
    """
    from interp.data.languages import LANGUAGES

    out: dict[str, dict[str, int]] = {}
    for w in words:
        spaced = LANGUAGES[w.lang].spaces if w.lang in LANGUAGES else True
        ids = tokenizer((" " if spaced else "") + w.text, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            out.setdefault(w.id, {})[w.lang] = ids[0]
    return out


def script_counts(scripts: Sequence[str]) -> dict[str, int]:
    """How many tokens each script has, most frequent first."""
    return dict(Counter(scripts).most_common())
