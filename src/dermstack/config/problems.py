"""How config problems are reported: ``[section] key = value: why``, with the closest known name.

Every section is a pydantic dataclass (:func:`schema`) with ``extra="forbid"``; a validation error
becomes (key, value, why) items that :func:`lines` formats, so one ConfigError lists every problem.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable
from typing import Any

from pydantic import ConfigDict, ValidationError
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from dermstack.errors import ConfigError, did_you_mean

_PROBLEM = "dermstack_config"
_NO_VALUE = object()


def unknown(what: str, name: object, known: Iterable[str]) -> str:
    """``unknown <what> (did you mean "x"?); known: ...`` (the list only when it is short)."""
    known = list(known)
    listed = f"; known: {', '.join(known)}" if len(known) <= 20 else ""
    return f"unknown {what}{did_you_mean(name, known)}{listed}"


def problem(items: list[tuple[str, Any, str]]) -> PydanticCustomError:
    """A validation error carrying (key below the current location, value, why) items."""
    return PydanticCustomError(_PROBLEM, "{why}", {"why": "; ".join(w for _, _, w in items), "items": items})


def fail(why: str) -> PydanticCustomError:
    return problem([("", _NO_VALUE, why)])


def _join(*parts: object) -> str:
    out = ""
    for p in parts:
        if p == "" or p is None:
            continue
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def problems_of(err: ValidationError, cls: type) -> list[tuple[str, Any, str]]:
    """(key, value, why) for each error of validating a dict against dataclass ``cls``."""
    known = [f.name for f in dataclasses.fields(cls)]
    out = []
    for e in err.errors(include_url=False):
        loc, ctx = e["loc"], e.get("ctx") or {}
        if e["type"] == _PROBLEM:
            out += [(_join(*loc, key), e["input"] if value is _NO_VALUE and not key else value, why)
                    for key, value, why in ctx["items"]]
        elif e["type"] == "unexpected_keyword_argument" and len(loc) == 1:
            out.append((_join(*loc), e["input"], unknown("key", loc[0], known)))
        elif e["type"] in ("dataclass_type", "dataclass_exact_type") and not loc:
            out.append(("", _NO_VALUE, f"expected a table, got {type(e['input']).__name__} {show(e['input'])}"))
        else:
            out.append((_join(*loc), e["input"], e["msg"]))
    return out


def show(value: Any) -> str:
    """A value as it reads in TOML (strings quoted, true/false)."""
    return json.dumps(value, default=str)


def lines(where: str, items: list[tuple[str, Any, str]]) -> list[str]:
    return [f"{where}{' ' + key if key else ''}{'' if value is _NO_VALUE else ' = ' + show(value)}: {why}"
            for key, value, why in items]


def validate(cls: type, value: Any) -> tuple[Any, list[tuple[str, Any, str]]]:
    """``cls`` built from the dict ``value``, or None and its problems."""
    try:
        return cls.__pydantic_validator__.validate_python(value), []
    except ValidationError as e:
        return None, problems_of(e, cls)


_SCHEMA = ConfigDict(extra="forbid")


def schema(where: str, frozen: bool = False):
    """Make ``cls`` a pydantic dataclass whose constructor raises a ConfigError (not a pydantic
    traceback) that reads ``{where} key = value: why``, as a config file's problems do."""
    def wrap(cls):
        cls = dataclass(cls, config=_SCHEMA, frozen=frozen)
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            try:
                init(self, *args, **kwargs)
            except ValidationError as e:
                raise ConfigError("; ".join(lines(where, problems_of(e, type(self))))) from None

        cls.__init__ = __init__
        cls.WHERE = where
        return cls
    return wrap

