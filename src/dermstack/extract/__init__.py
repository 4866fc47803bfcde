"""dermstack.extract: frozen timm backbones embed every image into an HDF5 EmbeddingStore.

Names load on first use (:mod:`dermstack.lazy`, as :mod:`dermstack`'s do): a stage that only reads an
EmbeddingStore does not pay the seconds of importing torch and timm.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from dermstack.lazy import lazy_names

if TYPE_CHECKING:
    from dermstack.extract.registry import DEFAULT_BACKBONE, Backbone, create_backbone
    from dermstack.extract.runner import ExtractReport, extract_embeddings
    from dermstack.extract.settings import ExtractSettings
    from dermstack.extract.store import EmbeddingStore, merge_stores

#: public name -> the module that defines it
_LAZY = {
    "DEFAULT_BACKBONE": "dermstack.extract.registry", "Backbone": "dermstack.extract.registry",
    "create_backbone": "dermstack.extract.registry", "ExtractReport": "dermstack.extract.runner",
    "extract_embeddings": "dermstack.extract.runner", "ExtractSettings": "dermstack.extract.settings",
    "EmbeddingStore": "dermstack.extract.store", "merge_stores": "dermstack.extract.store",
}

__all__ = ["DEFAULT_BACKBONE", "Backbone", "EmbeddingStore", "ExtractReport", "ExtractSettings", "create_backbone",
           "extract_embeddings", "merge_stores"]


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
