"""evaluation: base and SFT models -> held-out perplexities and generations."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
