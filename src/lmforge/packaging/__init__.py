"""Packaging of a trained model into a self-contained Hugging Face folder with a model card."""
