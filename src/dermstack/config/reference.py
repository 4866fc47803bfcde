"""The configuration reference, generated from the schema itself so that it can never drift: every
section and key of :class:`~dermstack.config.RunConfig` with its type, default and doc comment
(the ``#:`` comment above the field).

>>> rows(CVConfig)[0]
('n_splits', 'int ≥ 2', '5', 'folds of the patient-grouped, stratified split')
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from typing import Any

import annotated_types as at
import tomli_w

from dermstack.config.limits import AtMost
from dermstack.config.modelconfig import ModelConfig
from dermstack.config.runconfig import _SECTIONS
from dermstack.config.sections import SamplingConfig
from dermstack.config.types import Choices

_NAMES = {bool: "bool", int: "int", float: "float", str: "string", Any: "any"}
_ROLE = re.compile(r":\w+:`~?([^`]+)`")  # a Sphinx role in a docstring: :mod:`x` -> `x`
_BOUNDS = ((at.Ge, "ge", "≥"), (at.Gt, "gt", ">"), (at.Le, "le", "≤"), (at.Lt, "lt", "<"))


def sections() -> list[tuple[str, type]]:
    """(TOML header, schema) of every section, in the order a config reads."""
    out = []
    for name, cls in _SECTIONS.items():
        out.append((f"[[{name}]]" if cls is ModelConfig else f"[{name}]", cls))
        if cls is ModelConfig:
            out.append(("[[models]] sampling", SamplingConfig))
    return out


def doc_comments(cls: type) -> dict[str, str]:
    """Each field's ``#:`` comment lines, joined, from the source of ``cls`` and its bases."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        pending: list[str] = []
        for line in inspect.getsource(klass).splitlines():
            text = line.strip()
            if text.startswith("#:"):
                pending.append(text[2:].strip())
                continue
            field = re.match(r"(\w+)\s*:", text)
            if field and pending:
                out[field.group(1)] = " ".join(pending)
            pending = []
    return out


def type_text(tp: Any) -> str:
    """A field's type as a user reads it: ``int ≥ 1``, ``"a" | "b"``, ``list of string``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        base, *meta = args
        choices = next((m for m in meta if isinstance(m, Choices)), None)
        if choices is not None:
            return " | ".join(toml_value(v) for v in choices.listed())
        bounds = [f"{sign} {getattr(m, attr)}" for m in meta for kind, attr, sign in _BOUNDS if isinstance(m, kind)]
        bounds += [f"{sign} {getattr(m, attr)}" for m in meta if isinstance(m, at.Interval)
                   for _, attr, sign in _BOUNDS if getattr(m, attr) is not None]
        bounds += [f"≤ {m.most}" for m in meta if isinstance(m, AtMost)]
        text = " ".join([type_text(base), ", ".join(bounds)]).strip()
        return "non-empty " + text if any(isinstance(m, at.MinLen) and m.min_length == 1 for m in meta) else text
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args if a is not type(None))
    if origin is list:
        return f"list of {type_text(args[0])}"
    if origin is dict:
        return "table" if args[1] is Any else f"table of {type_text(args[1])}"
    return _NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def toml_value(value: Any) -> str:
    """``value`` as it is written in TOML (``unset`` for None: TOML has no null)."""
    if value is None:
        return "unset"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return tomli_w.dumps({"x": value}).strip().removeprefix("x = ")


def rows(cls: type) -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc comment) of every field of section schema ``cls``."""
    hints, docs = typing.get_type_hints(cls, include_extras=True), doc_comments(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out.append((f.name, type_text(hints[f.name]), toml_value(default), docs.get(f.name, "")))
    return out


def markdown() -> str:
    """The reference as Markdown: per section its docstring's first paragraph and a table of keys."""
    out = []
    for header, cls in sections():
        intro = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].replace("\n", " ").removeprefix(f"``{header}``: ")
        out += [f"## `{header}`", "", _cell(intro, code=False), "", "| key | type | default | what it sets |", "|---|---|---|---|"]
        out += ["| " + " | ".join(_cell(c, code=i < 3) for i, c in enumerate(row)) + " |" for row in rows(cls)]
        out.append("")
    return "\n".join(out)


def _cell(text: str, code: bool) -> str:
    """A table cell for Python-Markdown (mkdocs), where a code span keeps its pipes and text escapes them."""
    if code:
        return f"`{text}`"
    return _ROLE.sub(r"`\1`", text).replace("<", "&lt;").replace("|", r"\|")
