"""evaluation: base, SFT and (when align ran) aligned models -> held-out metrics, generations, operations metrics
and the HTML report."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
