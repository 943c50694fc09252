"""Tests for lmforge.tokenizer.encode and the streaming shard writer: same ids on every executor, bounded look-ahead."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shard_oracles import pack_documents, write_token_shards

from lmforge.data.executor import ExecutorConfig
from lmforge.tokenizer.encode import batch_texts, encode_batch_with_eos, encode_documents
from lmforge.tokenizer.shards import TokenShards, stream_token_shards

DOCS = [f"def f{i}(x):\n    return x * {i}  # 日本語 {i % 5}\n" * (1 + i % 4) for i in range(120)] + ["", "a </s> b"]


def test_batch_texts_groups_without_splitting():
    assert list(batch_texts(["ab", "cd", "e", "fghij", "k"], batch_bytes=3)) == [["ab", "cd"], ["e", "fghij"], ["k"]]
    assert list(batch_texts([], batch_bytes=3)) == []


def test_encode_batch_with_eos_matches_encode(tokenizer):
    flat = encode_batch_with_eos(["x = 1", "", "<s>"], tokenizer).tolist()
    eos = tokenizer.eos_id
    assert flat == [*tokenizer.encode("x = 1"), eos, eos, *tokenizer.encode("<s>", parse_special=False), eos]


@pytest.mark.timeout(60)
def test_encode_documents_same_ids_on_every_executor(tokenizer):
    one = list(encode_documents(DOCS, tokenizer, batch_bytes=500))  # in this process
    two = list(encode_documents(DOCS, tokenizer, executor=ExecutorConfig(kind="local", workers=2), batch_bytes=500))
    assert len(one) > 10
    assert [n for n, _ in one] == [n for n, _ in two] and sum(n for n, _ in one) == len(DOCS)
    assert np.array_equal(np.concatenate([a for _, a in one]), np.concatenate([a for _, a in two]))


@pytest.mark.timeout(60)
def test_encode_documents_reads_ahead_a_bounded_number_of_batches(tokenizer):
    consumed = 0

    def texts():
        nonlocal consumed
        for doc in DOCS * 5:
            consumed += 1
            yield doc

    stream = encode_documents(texts(), tokenizer, executor=ExecutorConfig(kind="local", workers=2),
                              batch_bytes=1)  # ~one document per batch
    n_first, _ = next(stream)
    assert consumed <= 2 * 2 * 2 + 1  # at most 2 * workers batches ahead, not the whole corpus (610 documents)
    assert n_first + sum(n for n, _ in stream) == consumed == len(DOCS) * 5


def test_executor_rejects_zero_workers():
    with pytest.raises(ValueError, match="workers"):
        ExecutorConfig(kind="local", workers=0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("num_proc", [1, 2])
def test_stream_token_shards_writes_what_write_token_shards_writes(tokenizer, tmp_path, num_proc):
    splits = {"train": DOCS[:100], "validation": DOCS[100:]}
    expected = {name: pack_documents(texts, tokenizer, seq_len=16) for name, texts in splits.items()}
    ref = write_token_shards(tmp_path / "ref", expected, tokenizer_sha256=tokenizer.sha256, seq_len=16,
                             blocks_per_shard=7)
    index = stream_token_shards(tmp_path / "out", splits, tokenizer, seq_len=16, blocks_per_shard=7,
                                executor=ExecutorConfig(kind="local", workers=num_proc))
    assert index.pop("documents") == {"train": 100, "validation": len(DOCS) - 100}
    assert index == ref
    assert {k: v for k, v in json.loads((tmp_path / "out" / "index.json").read_text()).items() if k != "documents"} == ref
    for info in ref["splits"].values():
        for shard in info["shards"]:
            assert np.array_equal(np.load(tmp_path / "out" / shard), np.load(tmp_path / "ref" / shard))
    shards = TokenShards.open(tmp_path / "out", expected_tokenizer_sha256=tokenizer.sha256)
    assert np.array_equal(np.stack(list(shards.iter_blocks("train"))), expected["train"])


def test_stream_token_shards_empty_split_gets_one_empty_shard(tokenizer, tmp_path):
    index = stream_token_shards(tmp_path, {"train": DOCS, "validation": []}, tokenizer, seq_len=8)
    assert index["splits"]["validation"] == {"shards": ["validation-00000.npy"], "n_blocks": 0, "n_tokens": 0}
    assert np.load(tmp_path / "validation-00000.npy").shape == (0, 8)
    assert TokenShards.open(tmp_path).n_blocks("validation") == 0
