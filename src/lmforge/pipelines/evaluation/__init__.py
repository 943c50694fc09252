"""evaluation: base and SFT models -> held-out metrics, generations, operations metrics and the HTML report."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
