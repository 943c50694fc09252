"""Tests for lmforge.tokenizer.train and the SentencePieceTokenizer wrapper."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizer_samples import MULTILINGUAL

import lmforge
from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
from lmforge.tokenizer.train import TokenizerTrainArgs, iterate_training_lines, sample_lines, train_tokenizer

CODE = (
    "import os\n\n\n"
    "class Config:\n"
    "    \"\"\"Doc with  two  spaces.\"\"\"\n"
    "\tdef method(self, x):\t# tab comment\n"
    "\t\tif x  >  1:   \n"
    "\t\t\treturn {'a': [1, 2,\n"
    "\t\t\t             3]}\n"
    "        mixed = '\\t\\n'  \r\n"
    "\n"
    "    \n"
    "x = 12345678901234567890\n"
    "  trailing   \n"
)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"Unknown TokenizerTrainArgs key\(s\) \['vocabsize'\]"):
        TokenizerTrainArgs.from_dict({"vocabsize": 100})


def test_from_dict_builds_config_from_conf_subset():
    config = TokenizerTrainArgs.from_dict({"model_type": "bpe", "vocab_size": 2048, "seed": 7})
    assert (config.vocab_size, config.seed, config.unk_id, config.pad_piece) == (2048, 7, 0, "<pad>")
    assert config.user_defined_symbols == ["<|im_start|>", "<|im_end|>"]


def test_from_dict_rejects_bad_model_type():
    with pytest.raises(ValueError, match="model_type"):
        TokenizerTrainArgs.from_dict({"model_type": "wordpiece"})


def test_iterate_training_lines_skips_empty_lines():
    assert list(iterate_training_lines(["a\n\n  b\n", "", "c"])) == ["a", "  b", "c"]


def test_empty_corpus_raises_clear_error():
    with pytest.raises(ValueError, match="empty corpus"):
        train_tokenizer(["", "\n\n"], TokenizerTrainArgs(vocab_size=300))


def test_training_is_deterministic(train_texts):
    texts = train_texts[:20]
    config = TokenizerTrainArgs(vocab_size=400)
    assert train_tokenizer(texts, config) == train_tokenizer(texts, config)


def test_seed_controls_line_sampling(train_texts):
    # With fewer sampled lines than the corpus has, the seed decides which lines are used.
    texts = train_texts[:20]
    first = train_tokenizer(texts, TokenizerTrainArgs(vocab_size=400, input_sentence_size=2000, seed=1))
    again = train_tokenizer(texts, TokenizerTrainArgs(vocab_size=400, input_sentence_size=2000, seed=1))
    other = train_tokenizer(texts, TokenizerTrainArgs(vocab_size=400, input_sentence_size=2000, seed=2))
    assert first == again
    assert first != other


def test_sampled_training_is_reproducible_across_processes(train_texts, tmp_path):
    # sentencepiece's own sampler gave a different model in every process; ours must not.
    texts = train_texts[:20]
    config = TokenizerTrainArgs(vocab_size=400, input_sentence_size=2000, seed=3)
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    script = (
        "import hashlib, json, sys\n"
        "from lmforge.tokenizer.train import TokenizerTrainArgs, train_tokenizer\n"
        "texts = json.load(open(sys.argv[1]))\n"
        "config = TokenizerTrainArgs(vocab_size=400, input_sentence_size=2000, seed=3)\n"
        "print(hashlib.sha256(train_tokenizer(texts, config)).hexdigest())\n"
    )
    src = str(Path(lmforge.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "texts.json")],
        capture_output=True, text=True, check=True, env=env,
    )
    assert out.stdout.strip() == hashlib.sha256(train_tokenizer(texts, config)).hexdigest()


def test_sample_lines_is_uniform_reservoir():
    assert sample_lines(iter(["a", "b"]), 5, seed=0) == (["a", "b"], 2)
    sample, n = sample_lines(iter(str(i) for i in range(1000)), 10, seed=0)
    assert n == 1000 and len(set(sample)) == 10
    assert sample == sample_lines(iter(str(i) for i in range(1000)), 10, seed=0)[0]


def test_special_token_ids(tokenizer):
    assert (tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (0, 1, 2, 3)
    assert [tokenizer.id_to_token(i) for i in range(4)] == ["<unk>", "<s>", "</s>", "<pad>"]
    assert tokenizer.token_to_id("<|im_start|>") == 4
    assert tokenizer.token_to_id("<|im_end|>") == 5
    assert tokenizer.user_defined_symbols == ["<|im_start|>", "<|im_end|>"]
    assert tokenizer.vocab_size == 1024


def test_token_to_id_rejects_unknown_piece(tokenizer):
    with pytest.raises(KeyError, match="not in the tokenizer vocabulary"):
        tokenizer.token_to_id("no-such-piece-xyz")


def test_sha256_is_hash_of_model_bytes(tokenizer, bpe_model_bytes):
    assert tokenizer.sha256 == hashlib.sha256(bpe_model_bytes).hexdigest()
    assert tokenizer.model_bytes == bpe_model_bytes


def test_from_file_loads_same_model(tokenizer, bpe_model_bytes, tmp_path):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(bpe_model_bytes)
    loaded = SentencePieceTokenizer.from_file(path)
    assert loaded.sha256 == tokenizer.sha256
    assert loaded.encode(CODE) == tokenizer.encode(CODE)


def test_no_learned_piece_contains_a_newline(tokenizer):
    # The chat masking and the HF export both rely on this (training is per line).
    pieces = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    assert not [p for p in pieces if "\n" in p]
    assert tokenizer.encode("\n") == [tokenizer.token_to_id("<0x0A>")]


def test_roundtrip_code_with_tabs_and_indentation(tokenizer):
    ids = tokenizer.encode(CODE)
    assert tokenizer.decode(ids) == CODE
    assert tokenizer.unk_id not in ids
    # indentation is compressed into whitespace pieces, not spelled space by space
    assert "▁▁▁▁" in tokenizer.encode_pieces("    return x")


def test_digits_are_split(tokenizer):
    pieces = tokenizer.encode_pieces("x = 12345")
    assert [p for p in pieces if any(c.isdigit() for c in p)] == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize("text", [*MULTILINGUAL, "未見の文字列：鬱蒼とした森、魑魅魍魎。𠮷野家 🦜"])
def test_roundtrip_cjk_and_unicode_without_unknown_ids(tokenizer, text):
    ids = tokenizer.encode(text)
    assert tokenizer.unk_id not in ids
    assert tokenizer.decode(ids) == text


def test_roundtrip_heldout_stdlib_files(tokenizer, heldout_texts):
    failures = [k for k, text in enumerate(heldout_texts) if tokenizer.decode(tokenizer.encode(text)) != text]
    assert len(heldout_texts) > 100
    assert failures == []


def test_encode_maps_special_token_text_unless_disabled(tokenizer):
    ids = tokenizer.encode("<s>x</s>")
    assert ids[0] == tokenizer.bos_id and ids[-1] == tokenizer.eos_id
    raw = tokenizer.encode("<s>x</s>", parse_special=False)
    assert tokenizer.bos_id not in raw and tokenizer.eos_id not in raw
    assert tokenizer.decode(raw) == "<s>x</s>"
    # user-defined chat markers are atomic either way (sentencepiece behaviour)
    assert tokenizer.encode("<|im_end|>", parse_special=False) == [tokenizer.token_to_id("<|im_end|>")]


def test_decode_skips_special_tokens_by_default(tokenizer):
    ids = [tokenizer.bos_id, *tokenizer.encode("a b"), tokenizer.eos_id, tokenizer.pad_id]
    assert tokenizer.decode(ids) == "a b"
    assert tokenizer.decode(ids, skip_special_tokens=False) == "<s>a b</s><pad>"


def test_tokenizer_pickles_and_deepcopies(tokenizer):
    for clone in (pickle.loads(pickle.dumps(tokenizer)), copy.deepcopy(tokenizer)):
        assert clone.sha256 == tokenizer.sha256
        assert clone.encode(CODE) == tokenizer.encode(CODE)
