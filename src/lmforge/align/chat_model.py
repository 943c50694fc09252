"""The one rule for which chat model evaluation, the gate and packaging take: the aligned or the SFT one.

Apart from ``config.py`` so that evaluation and packaging depend on this file only, not on the align stage's
losses, readers and sampling (DVC reruns a stage when a file it imports changes).
"""

from __future__ import annotations

from pathlib import Path

DISABLED_MARKER = "ALIGN_DISABLED.md"
"""The file the align stage leaves in ``align_checkpoint`` when ``align.enabled`` is false (and no model)."""


def resolve_chat_model(align_checkpoint: str, sft_checkpoint: str) -> tuple[str, str]:
    """``(model_dir, "aligned" | "sft")``: the model evaluation's third column, the gate and packaging take.

    The aligned model when ``align_checkpoint`` holds one (its ``config.json``); the SFT model when it holds
    only `DISABLED_MARKER` (``align.enabled: false``). Raises FileNotFoundError when ``align_checkpoint`` is
    missing, and ValueError when it holds neither.
    """
    align = Path(align_checkpoint)
    if not align.is_dir():
        raise FileNotFoundError(f"{align_checkpoint}: no align output; run `kedro run --pipeline align` first")
    if (align / "config.json").is_file():
        return str(align_checkpoint), "aligned"
    if (align / DISABLED_MARKER).is_file():
        return str(sft_checkpoint), "sft"
    raise ValueError(f"{align_checkpoint}: neither a model (config.json) nor {DISABLED_MARKER}; "
                     "rerun `kedro run --pipeline align`")
