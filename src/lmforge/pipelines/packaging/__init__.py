"""packaging: quality gate -> the aligned (when align ran) or SFT checkpoint + tokenizer -> a Hugging Face model
directory with a model card, its GGUF files checked on llama.cpp -> the MLflow Model Registry."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
