"""pretrain: token shards -> pretrained checkpoint (DeepSpeed, several processes)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
