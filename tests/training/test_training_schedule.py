"""lr_lambda: linear warmup to the peak, then cosine decay to ``min_ratio`` at ``total`` steps."""

from __future__ import annotations

import math

import pytest

from lmforge.training.loop import lr_lambda


def test_warmup_rises_linearly_to_the_peak():
    values = [lr_lambda(s, warmup=4, total=20, min_ratio=0.1) for s in range(4)]

    assert values == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_cosine_decays_from_peak_to_min_ratio():
    warmup, total, min_ratio = 4, 20, 0.1
    decay = [lr_lambda(s, warmup=warmup, total=total, min_ratio=min_ratio) for s in range(warmup, total + 1)]

    assert decay[0] == pytest.approx(1.0)
    assert decay[-1] == pytest.approx(min_ratio)
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    middle = warmup + (total - warmup) // 2
    assert lr_lambda(middle, warmup=warmup, total=total, min_ratio=min_ratio) == pytest.approx(
        min_ratio + (1 - min_ratio) * 0.5)


def test_stays_at_min_ratio_after_total():
    assert lr_lambda(50, warmup=4, total=20, min_ratio=0.2) == pytest.approx(0.2)


def test_no_warmup_starts_at_peak():
    assert lr_lambda(0, warmup=0, total=10, min_ratio=0.0) == pytest.approx(1.0)
    assert lr_lambda(5, warmup=0, total=10, min_ratio=0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
