"""Controls for lens readouts of few-shot translation: token collisions and demonstrations.

Two confounds can fake a "latent English" reading:

- **collisions**: when a concept's English and source forms share first tokens (cognates, loans,
  ``Tomate``/``tomato``), p(English) at a layer is the source word being copied from the prompt;
  when the target shares them with English or the source, p(target) is ambiguous too.
  ``collision_kinds`` names which of the three overlaps a concept has for a language pair.
- **demonstrations**: one fixed set of demonstrations per pair makes a pair's curve partly a
  measurement of those few words. ``per_word_demonstrations`` draws a set per test word, seeded by
  the word, so every prompt is reproducible on its own and never shows its own answer.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from interp.errors import PolylensError

COLLISION_KINDS = ("target_en", "target_source", "en_source")
"""The overlaps checked: target vs English, target vs source, English vs source."""


def collision_kinds(sets: Mapping[str, Sequence[int]], src: str, tgt: str) -> list[str]:
    """The ``COLLISION_KINDS`` whose two languages share a first token of this concept.

    Args:
        sets: the concept's first tokens per language (must hold ``src``, ``tgt`` and ``en``).
        src: source language of the prompt.
        tgt: target language of the prompt.

    A kind whose two roles are the same language (``tgt == "en"``, ``src == "en"``, the
    repetition task) is not a collision: the roles are one readout.
    """
    roles = {"target_en": (tgt, "en"), "target_source": (tgt, src), "en_source": ("en", src)}
    return [
        kind
        for kind, (a, b) in roles.items()
        if a != b and set(sets.get(a, ())) & set(sets.get(b, ()))
    ]


def _sample(pool: Sequence[str], excluded: set[str], n: int, seed: str) -> list[str]:
    candidates = sorted(set(pool) - excluded)  # sorted: the draw must not depend on pool order
    if len(candidates) < n:
        raise PolylensError(
            f"{len(candidates)} words left to demonstrate with, {n} needed; "
            "lower n_demos or add words"
        )
    return random.Random(seed).sample(candidates, n)


def per_word_demonstrations(
    pool: Sequence[str], test: str, n: int, *, seed: int, key: str = ""
) -> list[str]:
    """``n`` demonstration words for the test word ``test``, drawn from ``pool`` without it.

    The draw is seeded by ``seed``, ``key`` (e.g. the language pair) and the test word alone, so
    a prompt is the same whatever other words or pairs a run holds.
    """
    return _sample(pool, {test}, n, f"{seed}:{key}:{test}")


def fixed_demonstrations(
    pool: Sequence[str], tests: Sequence[str], n: int, *, seed: int, key: str = ""
) -> list[str]:
    """One set of ``n`` demonstration words for all of ``tests`` (the fixed-per-pair variant)."""
    return _sample(pool, set(tests), n, f"{seed}:{key}")
