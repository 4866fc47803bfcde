"""dermstack.extract: frozen timm backbones embed every image into an HDF5 EmbeddingStore.

Names load on first use (PEP 562, as :mod:`dermstack` does): a stage that only reads an
EmbeddingStore does not pay the seconds of importing torch and timm.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dermstack.extract.registry import DEFAULT_BACKBONE, Backbone, create_backbone
    from dermstack.extract.runner import ExtractReport, extract_embeddings
    from dermstack.extract.settings import ExtractSettings
    from dermstack.extract.store import EmbeddingStore, merge_stores

#: public name -> the submodule that defines it
_LAZY = {
    "DEFAULT_BACKBONE": "registry", "Backbone": "registry", "create_backbone": "registry",
    "ExtractReport": "runner", "extract_embeddings": "runner", "ExtractSettings": "settings",
    "EmbeddingStore": "store", "merge_stores": "store",
}

__all__ = ["DEFAULT_BACKBONE", "Backbone", "EmbeddingStore", "ExtractReport", "ExtractSettings", "create_backbone",
           "extract_embeddings", "merge_stores"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dermstack.extract' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"dermstack.extract.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
