"""Shared fixtures: small real corpora from the interpreter's standard library and tiny tokenizers.

Training corpus: top-level stdlib modules (~1.5 MB) plus a multilingual sample. Held-out corpus:
stdlib files from sub-packages, never seen in training, used for round-trip and HF-parity checks.
Everything is session-scoped: each tokenizer trains once (about a second).
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import pytest
from tokenizer_samples import MULTILINGUAL

from lmforge.tokenizer.chat_template import DEFAULT_CHAT_TEMPLATE
from lmforge.tokenizer.export import export_hf_tokenizer
from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
from lmforge.tokenizer.train import TokenizerTrainArgs, train_tokenizer

STDLIB = Path(sysconfig.get_paths()["stdlib"])

def read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def _stdlib_files() -> list[Path]:
    return sorted(p for p in STDLIB.rglob("*.py") if "site-packages" not in p.parts)


@pytest.fixture(scope="session")
def train_texts() -> list[str]:
    texts, size = [], 0
    for path in sorted(STDLIB.glob("*.py")):
        text = read_text(path)
        texts.append(text)
        size += len(text)
        if size > 1_500_000:
            break
    return texts + MULTILINGUAL * 20


@pytest.fixture(scope="session")
def heldout_texts() -> list[str]:
    """~300 whole stdlib files from sub-packages (not in the training corpus), ~2 MB at most."""
    nested = [p for p in _stdlib_files() if p.parent != STDLIB]
    step = max(1, len(nested) // 300)
    texts, size = [], 0
    for path in nested[::step][:300]:
        text = read_text(path)
        if len(text) > 30_000:
            continue
        texts.append(text)
        size += len(text)
        if size > 2_000_000:
            break
    return texts


@pytest.fixture(scope="session")
def bpe_model_bytes(train_texts) -> bytes:
    return train_tokenizer(train_texts, TokenizerTrainArgs(vocab_size=1024))


@pytest.fixture(scope="session")
def tokenizer(bpe_model_bytes) -> SentencePieceTokenizer:
    return SentencePieceTokenizer.from_bytes(bpe_model_bytes)


@pytest.fixture(scope="session")
def hf_dir(bpe_model_bytes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf_tokenizer")
    export_hf_tokenizer(bpe_model_bytes, out, chat_template=DEFAULT_CHAT_TEMPLATE, model_max_length=512)
    return out


@pytest.fixture(scope="session")
def hf_tokenizer(hf_dir):
    """The exported folder loaded by transformers, offline (nothing in these tests may download)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(hf_dir))
