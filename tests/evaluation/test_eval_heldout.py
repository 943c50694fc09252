"""Each model is evaluated in its own tokenizer's ids: held-out blocks, masked conversations, bits per byte and the
template audit of evaluation's prompts, on tiny foreign models (tests/foreign_models.py) and lmforge's own tokenizer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from foreign_models import END_OF_TURN, build_foreign_model, upper_case_user_turns

from lmforge.evaluation.heldout import (
    HeldoutSources,
    encode_heldout_blocks,
    heldout_data,
    hf_token_byte_lengths,
)

TEXT = "def f(x):\n    return x ** 2  # héllo wörld\n你好，世界。こんにちは 🙂 The quick brown fox.\n"
DOCUMENTS = [f"Document {i}: the weather was cold, so she read a book. 你好 {i}\ndef add(a, b):\n    return a + b\n"
             for i in range(12)]
CONVERSATIONS = [{"id": f"c{i}", "messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                                               {"role": "assistant", "content": f"It is {2 * i}."}]} for i in range(4)]


@pytest.fixture(scope="module")
def foreign_dir(tmp_path_factory):
    """One directory per family, built once for the module."""
    root = tmp_path_factory.mktemp("foreign")
    return lambda family: root / family if (root / family).is_dir() else build_foreign_model(family, root / family)


def sft_like_checkpoint(base_dir, out_dir, chat_template=None):
    """What the sft stage leaves: another model of the family with the tokenizer, template and stop ids saved."""
    import shutil

    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer
    from lmforge.training.sft import finish_sft_checkpoint

    shutil.copytree(base_dir, out_dir)
    chat = ChatTokenizer.load(base_dir, chat_template=chat_template, model_dir=base_dir)
    finish_sft_checkpoint(str(out_dir), chat)
    return out_dir, chat


@pytest.mark.parametrize("family", ["qwen2", "llama3", "gemma"])
def test_byte_table_of_a_byte_level_bpe_counts_the_bytes_of_the_decoded_text(family, foreign_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(foreign_dir(family))
    table = hf_token_byte_lengths(tokenizer)
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert int(table[ids].sum()) == len(tokenizer.decode(ids).encode("utf-8")) == len(TEXT.encode("utf-8"))
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN[family])
    assert table[eot] == 0 and table[tokenizer.eos_token_id] == 0  # chat structure is no text


def test_byte_table_of_lmforge_sentencepiece_equals_its_own_table(chain_tokenizer_dir):
    """Read through Hugging Face, lmforge's sentencepiece tokenizer gets the table token_byte_lengths gives."""
    from transformers import AutoTokenizer

    from lmforge.evaluation.perplexity import token_byte_lengths
    from lmforge.tokenizer.artifact import load_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(chain_tokenizer_dir)
    table = hf_token_byte_lengths(tokenizer)
    np.testing.assert_array_equal(table, token_byte_lengths(load_tokenizer(chain_tokenizer_dir)[0]))
    text = "def f(x):\n    return x  # plain code\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert int(table[ids].sum()) == len(text.encode("utf-8"))


@pytest.mark.parametrize(("family", "adds_bos"), [("gemma", True), ("qwen2", False)])
def test_heldout_blocks_pack_documents_as_the_shards_do(family, adds_bos, foreign_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(foreign_dir(family))
    blocks = encode_heldout_blocks(DOCUMENTS, tokenizer, seq_len=16, max_blocks=5)
    assert len(blocks) == 5 and all(len(b) == 16 for b in blocks)
    first = tokenizer(DOCUMENTS[0], add_special_tokens=False)["input_ids"]
    head = [tokenizer.bos_token_id] if adds_bos else []
    stream = [t for b in blocks for t in b]
    assert stream[: len(head) + len(first) + 1] == [*head, *first, tokenizer.eos_token_id][: len(stream)]
    assert len(encode_heldout_blocks(DOCUMENTS, tokenizer, seq_len=16, max_blocks=1000)) < 1000  # the corpus ends
    with pytest.raises(ValueError, match="no full 4096-token block"):
        encode_heldout_blocks(DOCUMENTS[:1], tokenizer, seq_len=4096, max_blocks=3)


def test_a_foreign_model_without_shards_is_scored_on_encoded_validation_documents(foreign_dir, tiny_tokenizer_dir):
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer

    model_dir = foreign_dir("llama3")
    chat = ChatTokenizer.for_model(str(model_dir), str(tiny_tokenizer_dir))
    assert chat.source == str(model_dir)  # the model's own tokenizer, not the stage's
    sources = HeldoutSources(stage_tokenizer=str(tiny_tokenizer_dir), token_shards="unused",
                             validation_texts=lambda: iter(DOCUMENTS), seq_len=64)
    data = heldout_data(chat, sources, CONVERSATIONS, max_blocks=3, max_examples=2, max_example_tokens=128,
                        context=32, stage_chat=ChatTokenizer.load(tiny_tokenizer_dir))
    assert len(data.blocks) == 3 and all(len(b) == 32 for b in data.blocks)  # capped by the context
    assert data.source.startswith("validation documents")
    assert len(data.examples) == 2
    ids, labels = data.examples[0]
    trained = [i for i, label in zip(ids, labels, strict=True) if label != -100]
    assert trained[-1] == chat.end_of_turn_id == chat.tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert len(data.token_bytes) == len(chat.tokenizer)


def test_a_continued_pretraining_checkpoint_is_scored_on_the_pretrain_stage_shards(foreign_dir, tiny_tokenizer_dir,
                                                                                    tmp_path):
    """Shards the pretrain stage wrote with a base model's tokenizer are found for a checkpoint carrying a copy of
    that tokenizer (with its template), and hold the very blocks the fallback encoder would make."""
    from transformers import AutoTokenizer

    from lmforge.evaluation.heldout import find_shards
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer
    from lmforge.tokenizer.hf_encoder import build_model_token_shards_dir

    base = foreign_dir("gemma")
    shards = tmp_path / "pretrain_tokens"
    build_model_token_shards_dir({"train": DOCUMENTS, "validation": DOCUMENTS}, base, shards, seq_len=16,
                                 blocks_per_shard=100)
    checkpoint, _ = sft_like_checkpoint(base, tmp_path / "checkpoint")
    chat = ChatTokenizer.for_model(str(checkpoint), str(tiny_tokenizer_dir))
    assert find_shards([str(tmp_path / "absent"), str(shards)], chat.tokenizer) == str(shards)
    assert find_shards([str(shards)], AutoTokenizer.from_pretrained(foreign_dir("qwen2"))) is None  # other ids
    sources = HeldoutSources(stage_tokenizer=str(tiny_tokenizer_dir), token_shards="unused", other_shards=[str(shards)],
                             validation_texts=lambda: pytest.fail("the shards hold this tokenizer's ids"))
    data = heldout_data(chat, sources, [], max_blocks=4, max_examples=0, max_example_tokens=64, context=None)
    assert data.source == str(shards) and len(data.blocks) == 4
    expected = encode_heldout_blocks(DOCUMENTS, chat.tokenizer, seq_len=16, max_blocks=4)
    assert [list(map(int, block)) for block in data.blocks] == expected


def test_lmforge_own_tokenizer_keeps_the_tokenizer_stage_shards(chain_tokenizer_dir, chain_token_shards, tmp_path):
    """A checkpoint carrying a copy of lmforge's tokenizer is scored on the stage's shards with the sentencepiece
    table, as before foreign models existed (the default chain's numbers do not change)."""
    from lmforge.evaluation.perplexity import token_byte_lengths
    from lmforge.tokenizer.artifact import load_tokenizer
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer
    from lmforge.tokenizer.shards import TokenShards

    stage_chat = ChatTokenizer.load(chain_tokenizer_dir)
    stage_chat.save(tmp_path)  # what finish_sft_checkpoint writes into an SFT checkpoint
    chat = ChatTokenizer.load(tmp_path)
    sources = HeldoutSources(stage_tokenizer=chain_tokenizer_dir, token_shards=chain_token_shards,
                             validation_texts=lambda: pytest.fail("must not encode documents"))
    data = heldout_data(chat, sources, [], max_blocks=4, max_examples=0, max_example_tokens=64, context=None,
                        stage_chat=stage_chat)
    shards = TokenShards.open(chain_token_shards)
    assert data.source == chain_token_shards and len(data.blocks) == min(4, shards.n_blocks("validation"))
    np.testing.assert_array_equal(data.blocks[0], shards.block("validation", 0))
    np.testing.assert_array_equal(data.token_bytes, token_byte_lengths(load_tokenizer(chain_tokenizer_dir)[0]))


def _config(**overrides):
    from lmforge.evaluation.config import (
        EvaluationConfig,
        GenerationConfig,
        HeldoutPairsConfig,
        IdentityProbeConfig,
        ReportConfig,
        SpeedConfig,
    )
    from lmforge.evaluation.humaneval import HumanEvalConfig

    return EvaluationConfig(batch_size=2, max_heldout_blocks=3, max_sft_examples=3, max_example_tokens=128,
                            generation=GenerationConfig(max_new_tokens=3, prompts=["Hello?"]),
                            humaneval=HumanEvalConfig(enabled=False), identity_probe=IdentityProbeConfig(enabled=False),
                            heldout_pairs=HeldoutPairsConfig(max_examples=2, max_new_tokens=4),
                            speed=SpeedConfig(enabled=False), report=ReportConfig(None, None), **overrides)


@pytest.mark.parametrize(("family", "chat_template"), [("gemma", None), ("bloom", "chatml")])
def test_evaluate_models_scores_a_foreign_base_and_its_sft_checkpoint(family, chat_template, foreign_dir,
                                                                      tiny_tokenizer_dir, tmp_path):
    """SFT straight from a foreign model: both models in the foreign ids (blocks encoded from the validation
    documents), bits per byte from the decoded bytes, and evaluation's audit equal to sft's."""
    from lmforge.evaluation.suite import evaluate_models
    from lmforge.tokenizer.template_audit import training_audit

    base = foreign_dir(family)
    sft, chat = sft_like_checkpoint(base, tmp_path / "sft", chat_template=chat_template)
    sources = HeldoutSources(stage_tokenizer=str(tiny_tokenizer_dir), token_shards="unused",
                             validation_texts=lambda: iter(DOCUMENTS), seq_len=32)
    metrics, generations, audit = evaluate_models({"base": str(base), "sft": str(sft)}, sources, CONVERSATIONS,
                                                  _config(), chat_template=chat_template,
                                                  template_audit=training_audit(chat))
    assert metrics["heldout_blocks"] == 3.0 and metrics["sft_examples"] == 3.0
    for model in ("base", "sft"):
        assert math.isfinite(metrics[f"{model}.heldout.bits_per_byte"]) and metrics[f"{model}.heldout.bytes"] > 0
        assert math.isfinite(metrics[f"{model}.sft_pairs.bits_per_byte"])
    assert metrics["base.heldout.tokens"] == metrics["sft.heldout.tokens"] == 3 * 31
    assert "heldout.loss_delta_se" in metrics  # one tokenizer: the same items, paired
    assert [g["prompt"] for g in generations["sft"]] == ["Hello?"]
    assert audit["stage"] == "evaluation" and audit["template_sha256"] == chat.template_sha256
    assert audit["prompt"]["input_ids"] == training_audit(chat)["prompt"]["input_ids"]
    assert chat.end_of_turn_id in audit["stop_ids"]


def test_evaluation_fails_on_a_template_other_than_the_one_sft_trained_with(foreign_dir, tiny_tokenizer_dir,
                                                                           tmp_path):
    from lmforge.evaluation.suite import evaluate_models
    from lmforge.tokenizer.template_audit import TemplateMismatchError, training_audit

    base = foreign_dir("qwen2")
    sft, chat = sft_like_checkpoint(base, tmp_path / "sft")
    reference = training_audit(chat)
    upper_case_user_turns(sft)
    sources = HeldoutSources(stage_tokenizer=str(tiny_tokenizer_dir), token_shards="unused",
                             validation_texts=lambda: pytest.fail("the audit fails before anything is scored"))
    with pytest.raises(TemplateMismatchError, match=r"evaluation prompts the model differently from how sft trained "
                                                    r"it \(its chat template has sha256 \w+, sft's \w+\): first "
                                                    r"difference at token \d+: sft has '.*' \(id \d+\), evaluation has"):
        evaluate_models({"base": str(base), "sft": str(sft)}, sources, CONVERSATIONS, _config(),
                        template_audit=reference)
