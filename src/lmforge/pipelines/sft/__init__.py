"""sft: corpus + identity data -> instruction conversations -> fine-tuned checkpoint (DeepSpeed)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
