"""lmforge: an orchestrated, traceable chain from raw text to a packaged chat model."""

__version__ = "0.1.0"
