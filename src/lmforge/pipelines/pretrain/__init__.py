"""pretrain: token shards -> pretrained checkpoint (DeepSpeed, several processes); or a local HF model
trained further on the corpus re-tokenized with its own tokenizer (``pretrain.base_model``)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
