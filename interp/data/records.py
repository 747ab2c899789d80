"""Typed records, one per (item, language). Every record carries its language and a ``text``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Word:
    """A concrete concept in one language (``words``)."""

    id: str
    lang: str
    gloss: str
    """English gloss of the concept, the same in every language."""
    category: str
    forms: tuple[str, ...]
    """Surface forms in this language, the most common first."""

    @property
    def text(self) -> str:
        """The main form."""
        return self.forms[0]


@dataclass(frozen=True)
class Fact:
    """A (subject, relation, object) triple localized into one language (``facts``)."""

    id: str
    lang: str
    relation: str
    subject_code: str
    object_code: str
    subject: str
    object: str
    aliases: tuple[str, ...]
    """Other names of the object that count as correct."""
    cloze: str
    """The relation's template filled with the subject, ending right before the object."""
    question: str

    @property
    def text(self) -> str:
        """The cloze prompt."""
        return self.cloze


@dataclass(frozen=True)
class BoundaryQuestion:
    """A question a model can know (answerable) or cannot know (``boundary``)."""

    id: str
    lang: str
    type: str
    """real, fabricated_country, fabricated_city, fabricated_person or future_event."""
    answerable: bool
    question: str
    answers: tuple[str, ...]
    """Gold answer and aliases (answerable questions only)."""

    @property
    def text(self) -> str:
        """The question."""
        return self.question


@dataclass(frozen=True)
class Instruction:
    """A harmful or harmless instruction (``safety``)."""

    id: str
    lang: str
    harmful: bool
    category: str
    text: str


@dataclass(frozen=True)
class Sentence:
    """One sentence of the parallel corpus (``parallel``)."""

    id: str
    lang: str
    topic: str
    text: str


@dataclass(frozen=True)
class Prompt:
    """A prompt that invites a short free answer (``freeform``)."""

    id: str
    lang: str
    kind: str
    """question, or continuation (a sentence beginning, without final punctuation)."""
    topic: str
    text: str
