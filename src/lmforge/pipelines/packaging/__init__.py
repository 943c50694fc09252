"""packaging: SFT checkpoint + tokenizer -> a Hugging Face model directory with a model card."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
