"""align: SFT model + preference pairs (files, identity, on-policy rounds) -> aligned checkpoint (DeepSpeed)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
