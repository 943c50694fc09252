"""The cleaned corpus re-tokenized with a base model's own tokenizer (continued pretraining's token shards).

Oracle: the foreign tokenizer itself (``AutoTokenizer`` on the model directory), encoding each document
with special-token text split; the shards must hold those ids, a BOS before each document where the
tokenizer adds one on encode, its EOS after each, cut into full blocks.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from foreign_models import FAMILIES, build_foreign_model

from lmforge.tokenizer.hf_encoder import HFTextEncoder, build_model_token_shards_dir, hf_tokenizer_sha256
from lmforge.tokenizer.shards import TokenShards, stream_token_shards

DOCS = {
    "train": ["def add(a, b):\n    return a + b\n", "The quick brown fox <|im_end|> jumps.", "你好，世界"],
    "validation": ["Hello, world! " * 6],
}


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    return build_foreign_model("qwen2", tmp_path_factory.mktemp("qwen2") / "model")


def expected_stream(model_dir, texts: list[str], *, bos: bool) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    out: list[int] = []
    for text in texts:
        out += ([tok.bos_token_id] if bos else []) + tok(text, add_special_tokens=False,
                                                         split_special_tokens=True)["input_ids"] + [tok.eos_token_id]
    return out


def test_qwen2_documents_are_its_ids_each_followed_by_its_eos(qwen2, tmp_path):
    from transformers import AutoTokenizer

    seq_len = 8
    counts = build_model_token_shards_dir(DOCS, qwen2, tmp_path, seq_len=seq_len, blocks_per_shard=2)
    shards = TokenShards.open(tmp_path, expected_tokenizer_sha256=counts["sha256"])
    tok = AutoTokenizer.from_pretrained(str(qwen2))

    for split, texts in DOCS.items():
        stream = expected_stream(qwen2, texts, bos=False)  # Qwen2 adds no BOS
        n_blocks = len(stream) // seq_len
        got = np.concatenate(list(shards.iter_blocks(split)))
        assert got.tolist() == stream[: n_blocks * seq_len]  # full blocks only, the tail dropped
        assert counts[f"{split}_blocks"] == shards.n_blocks(split) == n_blocks
        assert counts[f"{split}_tokens"] == n_blocks * seq_len
    assert tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    # "<|im_end|>" written in a document is text, not the control token: the only EOS ids are the separators
    doc_ids = expected_stream(qwen2, DOCS["train"][1:2], bos=False)
    assert doc_ids.count(tok.eos_token_id) == 1 and doc_ids[-1] == tok.eos_token_id
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["tokenizer_kind"] == "huggingface" and index["tokenizer_source"] == str(qwen2)
    assert index["tokenizer_sha256"] == hf_tokenizer_sha256(tok) == counts["sha256"]
    assert index["dtype"] == "uint16" and index["eos_id"] == tok.eos_token_id and index["bos_id"] is None
    assert index["documents"] == {"train": 3, "validation": 1}


# Whether each family's tokenizer starts encoded text with BOS (tests/foreign_models.py: Gemma, the
# InternLM2 Llama-format port and Llama 3 do, as the real ones; Qwen2 and BLOOM do not).
BOS_ON_ENCODE = {"qwen2": False, "gemma": True, "bloom": False, "internlm2": True, "llama3": True}


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_documents_are_bos_where_its_tokenizer_adds_one_ids_and_eos(family, tmp_path):
    from transformers import AutoTokenizer

    model = build_foreign_model(family, tmp_path / family)
    tok = AutoTokenizer.from_pretrained(str(model))
    build_model_token_shards_dir(DOCS, model, tmp_path / "shards", seq_len=4, blocks_per_shard=8)

    got = np.concatenate(list(TokenShards.open(tmp_path / "shards").iter_blocks("train"))).tolist()
    stream = expected_stream(model, DOCS["train"], bos=BOS_ON_ENCODE[family])
    assert got == stream[: len(got)] and len(stream) - len(got) < 4
    assert stream.count(tok.eos_token_id) == 3  # one separator per document, none from the "<|im_end|>" text
    if BOS_ON_ENCODE[family]:
        assert got[0] == tok.bos_token_id and stream.count(tok.bos_token_id) == 3


def test_the_encoder_pickles_as_its_directory_for_the_encoding_processes(qwen2):
    encoder = HFTextEncoder(qwen2)
    state = pickle.dumps(encoder)

    assert len(state) < 1000  # the directory, not the vocabulary
    assert pickle.loads(state).encode_batch(DOCS["train"]) == encoder.encode_batch(DOCS["train"])


def test_the_hash_is_the_tokenizers_not_its_files_or_template(qwen2, tmp_path):
    """A checkpoint that saved the same tokenizer (with its template) finds the shards by the same hash."""
    from transformers import AutoTokenizer

    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer

    ChatTokenizer.load(qwen2).save(tmp_path)
    saved = AutoTokenizer.from_pretrained(str(tmp_path))
    saved.chat_template = None
    assert hf_tokenizer_sha256(saved) == HFTextEncoder(qwen2).sha256
    gemma_like = AutoTokenizer.from_pretrained(str(qwen2))
    gemma_like.add_special_tokens({"additional_special_tokens": ["<extra>"]})
    assert hf_tokenizer_sha256(gemma_like) != HFTextEncoder(qwen2).sha256


class _WideTokenizer:
    """A stand-in for a 150k-token vocabulary (Qwen2's real size): ids past 65535."""

    vocab_size = 151_646
    eos_id = 151_643
    sha256 = "wide"

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [[70_000 + len(t), 151_000] for t in texts]


def test_ids_past_65535_are_stored_as_uint32(tmp_path):
    index = stream_token_shards(tmp_path, {"train": ["a", "bb"]}, _WideTokenizer(), seq_len=3)
    shards = TokenShards.open(tmp_path, expected_tokenizer_sha256="wide")

    assert index["dtype"] == "uint32"
    assert np.concatenate(list(shards.iter_blocks("train"))).tolist() == [70_001, 151_000, 151_643, 70_002, 151_000,
                                                                          151_643]


def test_a_tokenizer_without_eos_is_refused(qwen2, tmp_path):
    import shutil

    model = tmp_path / "no-eos"
    shutil.copytree(qwen2, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["eos_token"] = None
    (model / "tokenizer_config.json").write_text(json.dumps(config))

    with pytest.raises(ValueError, match="no EOS token"):
        HFTextEncoder(model)
