"""dermstack.extract: frozen timm backbones embed every image into an HDF5 EmbeddingStore."""
from dermstack.extract.registry import DEFAULT_BACKBONE, Backbone, create_backbone
from dermstack.extract.runner import ExtractReport, extract_embeddings
from dermstack.extract.settings import ExtractSettings
from dermstack.extract.store import EmbeddingStore, merge_stores

__all__ = ["DEFAULT_BACKBONE", "Backbone", "EmbeddingStore", "ExtractReport", "ExtractSettings", "create_backbone",
           "extract_embeddings", "merge_stores"]
