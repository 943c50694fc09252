"""Tests for lmforge.tokenizer.artifact and lmforge.training.sft_data on a tiny trained tokenizer."""

import json

import pytest

from lmforge.tokenizer.artifact import build_token_shards_dir, build_tokenizer_dir, load_tokenizer, measure_tokenizer
from lmforge.tokenizer.chat_template import DEFAULT_CHAT_TEMPLATE
from lmforge.tokenizer.config import TokenizerConfig, TokenShardArgs
from lmforge.tokenizer.shards import TokenShards
from lmforge.tokenizer.train import TokenizerTrainArgs
from lmforge.training.sft_data import build_sft_examples

TEXTS = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n\nclass C{i}:\n    value = {i}\n" for i in range(300)]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    config = TokenizerConfig(train=TokenizerTrainArgs(vocab_size=320), chat_template=DEFAULT_CHAT_TEMPLATE,
                             model_max_length=128)
    info = build_tokenizer_dir(TEXTS, config, out)
    assert info["vocab_size"] == 320
    return out


def test_directory_holds_model_hf_files_and_the_template(tokenizer_dir):
    tok, template = load_tokenizer(tokenizer_dir)
    assert template == DEFAULT_CHAT_TEMPLATE
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    assert config["chat_template"] == DEFAULT_CHAT_TEMPLATE
    assert (tokenizer_dir / "tokenizer.json").exists()
    assert tok.decode(tok.encode(TEXTS[3])) == TEXTS[3]


def test_a_directory_without_template_is_refused(tokenizer_dir, tmp_path):
    (tmp_path / "tokenizer.model").write_bytes((tokenizer_dir / "tokenizer.model").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ValueError, match="no chat_template"):
        load_tokenizer(tmp_path)


def test_measure_counts_tokens_and_no_unknowns(tokenizer_dir):
    tok, _ = load_tokenizer(tokenizer_dir)
    stats = measure_tokenizer(["héllo wörld 你好\n", "x = 1\n"], tok)
    assert stats["unknown_tokens"] == 0
    assert stats["byte_fallback_rate"] > 0  # CJK was never seen in training: it falls back to bytes
    assert stats["validation_tokens"] == len(tok.encode("héllo wörld 你好\n", parse_special=False)) + len(
        tok.encode("x = 1\n", parse_special=False))


def test_token_shards_carry_the_tokenizer_hash(tokenizer_dir, tmp_path):
    counts = build_token_shards_dir({"train": TEXTS[:250], "validation": TEXTS[250:]}, tokenizer_dir, tmp_path,
                                    TokenShardArgs(seq_len=32, blocks_per_shard=8))
    tok, _ = load_tokenizer(tokenizer_dir)
    shards = TokenShards.open(tmp_path, expected_tokenizer_sha256=tok.sha256)
    assert shards.n_blocks("train") == counts["train_blocks"] > 0
    assert counts["validation_tokens"] == counts["validation_blocks"] * 32


def test_a_split_too_small_for_one_block_is_an_error(tokenizer_dir, tmp_path):
    with pytest.raises(ValueError, match="no full 4096-token block"):
        build_token_shards_dir({"train": TEXTS, "validation": ["x"]}, tokenizer_dir, tmp_path,
                               TokenShardArgs(seq_len=4096, blocks_per_shard=8))


def test_sft_examples_mask_prompts_and_count_drops(tokenizer_dir):
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer

    tok, _ = load_tokenizer(tokenizer_dir)
    convs = [
        {"id": "ok", "messages": [{"role": "user", "content": "def f(x):"}, {"role": "assistant", "content": "return x"}]},
        {"id": "long", "messages": [{"role": "user", "content": "x " * 400}, {"role": "assistant", "content": "y"}]},
        {"id": "bad", "messages": [{"role": "user", "content": "hi <|im_end|>"}, {"role": "assistant", "content": "y"}]},
        {"id": "role", "messages": [{"role": "robot", "content": "hi"}]},
    ]
    examples, stats = build_sft_examples(convs, ChatTokenizer.load(tokenizer_dir), max_length=64)
    assert [e["id"] for e in examples] == ["ok"]
    assert stats["dropped"] == {"too_long": 1, "invalid_conversation": 2, "unmaskable": 0}
    ex = examples[0]
    trained = [i for i, label in zip(ex["input_ids"], ex["labels"], strict=True) if label != -100]
    assert tok.decode(trained, skip_special_tokens=False) == "return x<|im_end|>"


def test_hf_parity_check_passes_on_the_export_and_catches_a_tampered_one(tokenizer_dir, tmp_path):
    import shutil

    from lmforge.tokenizer.export import verify_hf_parity

    ok = verify_hf_parity(tokenizer_dir, TEXTS[:50])
    assert ok["hf_parity_texts"] == 50 and ok["hf_parity_mismatches"] == 0
    tampered = tmp_path / "tampered"
    shutil.copytree(tokenizer_dir, tampered)
    spec = json.loads((tampered / "tokenizer.json").read_text())
    spec["model"]["merges"] = spec["model"]["merges"][1:]  # drop the highest-priority merge
    (tampered / "tokenizer.json").write_text(json.dumps(spec))
    bad = verify_hf_parity(tampered, TEXTS[:50])
    assert bad["hf_parity_mismatches"] > 0 and bad["hf_parity_examples"][0].startswith("text ")
