"""data_processing: raw sources -> cleaned, deduplicated, validated document shards."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
