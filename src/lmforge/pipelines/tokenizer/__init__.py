"""tokenizer: cleaned documents -> sentencepiece tokenizer (HF export, chat template) and packed token shards."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
