"""Validate a config dataclass's fields by their declared types and ranges.

The checks are driven by the type hints (``int``, ``float``, ``str``, ``bool``, ``list[str]``,
``X | None``, ``Literal[...]``) and a ``_ranges`` table per config class, so every experiment's
config is checked the same way without repeating code. A mistake is one line naming the field,
the bad value and what is expected.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import os
import textwrap
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from interp.errors import PolylensError


@dataclass(frozen=True)
class Range:
    """An interval a numeric field must lie in (``None`` is unbounded)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {self.hi}"
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        return f"in {left}{self.lo}, {self.hi}{right}"


def at_least(lo: float) -> Range:
    """``value >= lo``."""
    return Range(lo)


def above(lo: float) -> Range:
    """``value > lo``."""
    return Range(lo, lo_open=True)


class _Invalid(Exception):
    pass


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def describe(tp: Any) -> str:
    """What a value of type ``tp`` looks like, in words."""
    if _is_union(tp):
        arms = [a for a in typing.get_args(tp) if a is not type(None)]
        text = " or ".join(describe(a) for a in arms)
        return text + " or null" if len(arms) < len(typing.get_args(tp)) else text
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"a list of {describe(typing.get_args(tp)[0]).removeprefix('a ')}s"
    if typing.get_origin(tp) is dict:
        key, value = typing.get_args(tp)
        return f"a mapping of {describe(key)} to {describe(value)}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if tp in names:
        return names[tp]
    raise TypeError(f"config fields of type {tp!r} have no validation rule")


def convert(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (ints widen to floats); raises ``_Invalid`` when it is not one."""
    if _is_union(tp):
        if value is None and type(None) in typing.get_args(tp):
            return None
        for arm in typing.get_args(tp):
            if arm is not type(None):
                try:
                    return convert(value, arm)
                except _Invalid:
                    pass
        raise _Invalid
    if typing.get_origin(tp) is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        raise _Invalid
    if typing.get_origin(tp) is list:
        if not isinstance(value, (list, tuple)):
            raise _Invalid
        return [convert(v, typing.get_args(tp)[0]) for v in value]
    if typing.get_origin(tp) is dict:
        if not isinstance(value, dict):
            raise _Invalid
        key_tp, value_tp = typing.get_args(tp)
        # YAML reads a GPU index (`0: 20GiB`) as an int key: a key is kept as its text.
        return {
            convert(str(k) if key_tp is str and isinstance(k, int) else k, key_tp): convert(
                v, value_tp
            )
            for k, v in value.items()
        }
    # bool is an int in Python; `n_words: true` is still a mistake.
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads `1e-3` (no dot) as a string.
        try:
            return float(value)
        except ValueError:
            raise _Invalid from None
    if tp is str and isinstance(value, str):
        return value
    if tp is str and isinstance(value, os.PathLike):
        # Paths (out, store, a model directory) are kept as text, as in config.yaml.
        return os.fspath(value)
    raise _Invalid


def repeated(values: Sequence[Any]) -> Any | None:
    """The first value of ``values`` that occurs earlier too (``None`` when all differ)."""
    seen = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


def ranges_of(cls: type) -> dict[str, Range]:
    """The ``_ranges`` tables of ``cls`` and its bases, a subclass's entries winning."""
    merged: dict[str, Range] = {}
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass).get("_ranges", {}))
    return merged


def validate_fields(config: Any) -> None:
    """Check and normalise every field of the dataclass instance ``config`` in place."""
    hints = typing.get_type_hints(type(config))
    ranges = ranges_of(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        tp, allowed = hints[f.name], ranges.get(f.name)
        expected = describe(tp) + (f" {allowed}" if allowed else "")
        try:
            converted = convert(value, tp)
        except _Invalid:
            converted = _Invalid
        if converted is _Invalid or (
            allowed is not None and converted is not None and converted not in allowed
        ):
            raise PolylensError(
                f"config field {f.name} = {value!r} is not valid: expected {expected}"
            )
        twice = repeated(converted) if isinstance(converted, list) else None
        if twice is not None:
            # A repeated language, relation or layer would weigh double in every mean over it.
            raise PolylensError(
                f"config field {f.name} = {value!r} is not valid: {twice!r} is listed twice; "
                "give each value once"
            )
        setattr(config, f.name, converted)


@dataclass(frozen=True)
class FieldSource:
    """A config field as its class's source declares it."""

    annotation: str
    """The annotation as written (``list[str] | None``)."""
    doc: str | None
    """The string literal after the field, cleaned (``None`` when there is none)."""


@functools.cache
def field_sources(cls: type) -> dict[str, FieldSource]:
    """Every field of the dataclass ``cls`` (its bases' too) as the source declares it.

    Read with ``ast``: a field's documentation is the string literal right after it. A field whose
    source cannot be read gets its type hint's text and no documentation.
    """
    hints = typing.get_type_hints(cls)
    found: dict[str, FieldSource] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = next((n.body for n in tree.body if isinstance(n, ast.ClassDef)), [])
        for node, after in zip(body, body[1:] + [None]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                doc = None
                if (
                    isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)
                ):
                    doc = inspect.cleandoc(after.value.value)
                found[node.target.id] = FieldSource(ast.unparse(node.annotation), doc)
    return {
        f.name: found.get(f.name) or FieldSource(_type_text(hints[f.name]), None)
        for f in dataclasses.fields(cls)
    }


def _type_text(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def format_value(value: Any) -> str:
    """``value`` as it is written on the command line (``field=VALUE``): YAML, in one word."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, str):
        try:
            plain = yaml.safe_load(value) == value and "," not in value and value.strip() == value
        except yaml.YAMLError:
            plain = False
        return value if plain else repr(value)
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text.removesuffix("...").strip()


def _takes_text(tp: Any) -> bool:
    """Whether a value of type ``tp`` may be a string (not a list)."""
    if _is_union(tp):
        return any(_takes_text(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is Literal:
        return all(isinstance(a, str) for a in typing.get_args(tp))
    return tp is str


def parse_value(name: str, text: str, tp: Any) -> Any:
    """The command-line text of field ``name`` (of type ``tp``) as a value, read as YAML.

    ``n_words=3`` is 3, ``langs=[en,fr]`` a list, ``store=null`` None. A field that takes text
    keeps the words YAML would read as something else (``out=2024``, ``lens=no``), as written;
    the value is validated when the config is built, by the same rules as a YAML file's.
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise PolylensError(
            f"config field {name} = {text!r} is not valid YAML ({problem}); expected {describe(tp)}"
        ) from None
    if value is not None and not isinstance(value, (str, list, dict)) and _takes_text(tp):
        return text
    return value


def fields_help(cls: type, defaults: dict[str, Any], width: int = 100) -> str:
    """One entry per field of ``cls``: ``name: type = default  (range)`` and its documentation."""
    ranges = ranges_of(cls)
    lines = []
    for name, source in field_sources(cls).items():
        head = f"  {name}: {source.annotation} = {format_value(defaults.get(name))}"
        if name in ranges:
            head += f"  ({ranges[name]})"
        lines.append(head)
        if source.doc:
            for paragraph in source.doc.replace("``", "`").split("\n\n"):
                lines += textwrap.wrap(
                    " ".join(paragraph.split()),
                    width,
                    initial_indent=" " * 6,
                    subsequent_indent=" " * 6,
                )
    return "\n".join(lines)
