"""Evaluation of trained models: perplexity, generated samples, and the base-vs-SFT summary.

Framework-free: functions take models, tokenizers and plain data and return flat metric dicts.
"""
