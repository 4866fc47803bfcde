"""Public names that load on first use (PEP 562): a package's ``__getattr__`` and ``__dir__``, so that
importing it costs nothing until a name is used (torch, timm, LightGBM ... load with the first)."""
from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_names(package: str, where: dict[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package``: name -> the module ``where[name]`` defines it in; a
    loaded name is kept in ``namespace`` (the package's ``globals()``)."""

    def __getattr__(name: str):
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value = getattr(importlib.import_module(module), name)
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
