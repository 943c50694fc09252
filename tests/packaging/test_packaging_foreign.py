"""Packaging a model fine-tuned from a foreign base: the checkpoint's own tokenizer, template and stop ids go into
the package, its card and its server; the template audit refuses a package whose serving prompt is not sft's."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from foreign_models import END_OF_TURN, build_foreign_model, upper_case_user_turns

EVALUATION = {"sft.heldout.perplexity": 209.6, "heldout.perplexity_ratio": 1.19, "sft.sft_pairs.perplexity": 186.7,
              "sft_pairs.perplexity_ratio": 0.70}


def sft_checkpoint(family, tmp_path):
    """What the sft stage leaves from a foreign base: weights, the tokenizer and template, every stop id, its audit."""
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer
    from lmforge.tokenizer.template_audit import training_audit
    from lmforge.training.sft import finish_sft_checkpoint

    base = build_foreign_model(family, tmp_path / "base")
    checkpoint = tmp_path / "sft"
    shutil.copytree(base, checkpoint)
    chat = ChatTokenizer.load(base, chat_template="chatml" if family == "bloom" else None, model_dir=base)
    finish_sft_checkpoint(str(checkpoint), chat)
    return base, checkpoint, chat, training_audit(chat)


def release(checkpoint, base, stage_tokenizer, audit):
    from lmforge.packaging.config import build_packaging_config
    from lmforge.packaging.release import release_model

    config = build_packaging_config({"model_name": "foreign-chat", "registry": {"enabled": False}}, {})
    return release_model(str(checkpoint), str(stage_tokenizer), {"evaluation": EVALUATION}, config,
                         git_commit="feedbeef", stages=(), card_artifacts={}, lineage_artifacts={},
                         hyperparameters={"sft": {"base_model": str(base)}}, template_audit=audit)[:3]


# internlm2 (pad = eos, turns end with <|im_end|>, not eos): its `kedro run` (the remote-code test in
# tests/pipelines/test_pipeline_foreign_models.py) stops before packaging, so its package is checked here
@pytest.mark.parametrize("family", ["gemma", "llama3", "internlm2"])
def test_package_carries_the_checkpoints_tokenizer_stop_ids_and_chat_format(family, tmp_path, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from lmforge.packaging.chat_model import ChatModel

    base, checkpoint, chat, audit = sft_checkpoint(family, tmp_path)
    package, metrics, packaged_audit = release(checkpoint, base, tiny_tokenizer_dir, audit)

    tokenizer = AutoTokenizer.from_pretrained(package)
    assert tokenizer.get_vocab() == chat.tokenizer.get_vocab()  # the checkpoint's, not the stage's tiny tokenizer
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN[family])
    generation = json.loads((tmp_path / package / "generation_config.json").read_text())
    assert set(generation["eos_token_id"]) == set(chat.stop_ids) and eot in generation["eos_token_id"]
    assert generation["eos_token_id"][0] == tokenizer.eos_token_id
    assert generation["pad_token_id"] == chat.pad_id and generation["bos_token_id"] == chat.bos_id
    card = (tmp_path / package / "README.md").read_text(encoding="utf-8")
    assert f"from the base model {base}" in card and f"| base model | {base} |" in card
    assert f"| chat template sha256 | {chat.template_sha256} |" in card
    escaped = END_OF_TURN[family].replace("|", "\\|")  # a table cell escapes its pipes
    assert f"| end-of-turn token | {escaped} (id {eot}) |" in card
    assert metrics["loads"] and metrics["max_logit_diff"] <= 1e-5

    assert packaged_audit["stage"] == "packaging" and packaged_audit["template_sha256"] == chat.template_sha256
    assert packaged_audit["prompt"]["input_ids"] == audit["prompt"]["input_ids"]
    server = ChatModel.load(package, device="cpu")
    assert eot in server.stop_ids and END_OF_TURN[family] in server.forbidden_text
    assert server.encode([{"role": "user", "content": "Hi"}]) == chat.encode_prompt([{"role": "user", "content": "Hi"}])


def test_bloom_package_serves_the_builtin_template_it_was_trained_with(tmp_path, tiny_tokenizer_dir):
    base, checkpoint, chat, audit = sft_checkpoint("bloom", tmp_path)
    package, _, packaged_audit = release(checkpoint, base, tiny_tokenizer_dir, audit)
    card = (tmp_path / package / "README.md").read_text(encoding="utf-8")
    assert "| chat template | chatml (built-in) |" in card and "| end-of-turn token | <\\|im_end\\|>" in card
    assert packaged_audit["prompt"]["input_ids"] == audit["prompt"]["input_ids"]


def test_a_mismatched_serving_template_fails_packaging_naming_the_first_differing_token(tmp_path, tiny_tokenizer_dir):
    """The checkpoint's template is edited after sft wrote its audit (user turns upper-cased, still a valid
    template): the package would serve prompts the model was never trained on, so packaging stops."""
    from lmforge.errors import is_expected, one_line
    from lmforge.tokenizer.template_audit import TemplateMismatchError

    base, checkpoint, chat, audit = sft_checkpoint("qwen2", tmp_path)
    upper_case_user_turns(checkpoint)
    with pytest.raises(TemplateMismatchError) as caught:
        release(checkpoint, base, tiny_tokenizer_dir, audit)
    message = one_line(caught.value)
    assert is_expected(caught.value) and "\n" not in message
    assert "packaging prompts the model differently from how sft trained it" in message
    found = re.search(r"first difference at token (\d+): sft has '(.*)' \(id (\d+)\), packaging has '(.*)' \(id", message)
    assert found and "data/08_reporting/template_audit/" in message
    i = int(found[1])
    assert audit["prompt"]["input_ids"][:i] == audit["training"]["input_ids"][:i]  # the same up to token i
    assert int(found[3]) == audit["prompt"]["input_ids"][i] and found[2] == audit["prompt"]["tokens"][i]
    assert found[2] != found[4] and found[2].upper().startswith(found[4])  # the upper-cased user text, named


@pytest.mark.parametrize(("hyperparameters", "base", "foreign"), [
    ({"sft": {"base_model": "/models/qwen"}}, "/models/qwen", True),
    ({"pretrain": {"base_model": "/models/qwen"}}, "/models/qwen (pretraining continued in this chain)", True),
    ({"pretrain": {"base_model": None}, "sft": {"base_model": None}}, "lmforge pretrain checkpoint (this chain)", False),
])
def test_card_names_the_base_model_the_chain_started_from(hyperparameters, base, foreign):
    from lmforge.packaging.config import PackagingConfig
    from lmforge.packaging.model_card import DEFAULT_DESCRIPTION, build_model_card_info

    info = build_model_card_info({}, PackagingConfig(), git_commit="x", hyperparameters=hyperparameters)
    assert info.base_model == base
    assert (info.description != DEFAULT_DESCRIPTION) is foreign and ("/models/qwen" in info.description) is foreign
