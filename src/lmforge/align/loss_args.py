"""The preference loss's settings, ``LossArgs`` (``align.loss``), apart from the loss code in ``losses.py``.

The training job's spec (``lmforge.training.config.JobSpec.preference``) carries them to the workers; keeping
them in this small file keeps every training stage's DVC deps off the loss code.
"""

from __future__ import annotations

from dataclasses import dataclass

METHODS = ("dpo", "ipo", "simpo", "orpo")
REFERENCE_FREE = ("simpo", "orpo")
SMOOTHED = ("dpo", "simpo")  # the methods whose loss has a label-smoothing term


@dataclass
class LossArgs:
    """Which preference loss, and its hyper-parameters (formulas in the module docstring)."""

    method: str = "dpo"
    """One of ``METHODS``: dpo, ipo (need a reference), simpo, orpo (reference-free)."""
    beta: float = 0.1
    """dpo/simpo: inverse temperature of the sigmoid; ipo: the regularisation tau (target margin 1/(2 beta));
    orpo: the weight lambda of the odds-ratio term beside the chosen answer's NLL. Must be > 0."""
    label_smoothing: float = 0.0
    """dpo/simpo: probability e in [0, 0.5) that a pair's preference label is flipped (conservative DPO).
    Must be 0 for ipo and orpo, which have no such term."""
    simpo_gamma: float = 0.5
    """simpo: the target reward margin gamma (in reward units, so h carries gamma / beta); ignored otherwise."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"align loss method {self.method!r} is unknown: use one of {', '.join(METHODS)}")
        if not self.beta > 0:
            raise ValueError(f"align loss beta must be > 0, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"align loss label_smoothing must lie in [0, 0.5), got {self.label_smoothing}")
        if self.label_smoothing and self.method not in SMOOTHED:
            raise ValueError(f"align loss label_smoothing applies to {' and '.join(SMOOTHED)} only: set it to 0 "
                             f"for method {self.method!r}")
