"""Model card rendering: front matter, sections, tables."""

from __future__ import annotations

import yaml

from lmforge.packaging.model_card import ModelCardInfo, render_model_card

SECTIONS = [
    "## Model",
    "## Training data",
    "## Training",
    "## Evaluation",
    "## How to use",
    "## Lineage",
    "## Limitations",
]


def make_info(**overrides):
    fields = dict(
        model_name="tiny-chat",
        preset="debug",
        parameter_counts={"total": 1_234_567},
        base_model="runs/pretrain-abc",
        training={"pretrain": {"steps": 100, "lr": 3e-4}},
        data={"records": 10, "tokens": 5000, "train_sha256": "abc123", "sources": {"stdlib_md5": "ff00"}},
        evaluation={"sft.heldout.perplexity": 7.123456789, "sft.heldout.tokens": 4096.0},
        git_commit="deadbeef",
        hardware="1x H100",
        license="mit",
        extra={"notes": "a | b"},
    )
    return ModelCardInfo(**{**fields, **overrides})


def test_front_matter_is_valid_yaml_for_the_hub():
    card = render_model_card(make_info())
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "transformers"
    assert front["license"] == "mit"
    assert "lmforge" in front["tags"]


def test_sections_appear_in_order():
    card = render_model_card(make_info())
    positions = [card.index(section + "\n") for section in SECTIONS]
    assert positions == sorted(positions)
    assert "## Additional information" in card


def test_tables_hold_values_flattened_and_escaped():
    card = render_model_card(make_info())
    assert "| sft.heldout.perplexity | 7.12346 |" in card
    assert "| sft.heldout.tokens | 4,096 |" in card
    assert "| parameters.total | 1,234,567 |" in card
    assert "| pretrain.steps | 100 |" in card
    assert "| notes | a \\| b |" in card


def test_lineage_lists_commit_and_data_hashes():
    card = render_model_card(make_info())
    lineage = card.split("## Lineage")[1].split("## Limitations")[0]
    assert "| git commit | deadbeef |" in lineage
    assert "| train_sha256 | abc123 |" in lineage
    assert "| sources.stdlib_md5 | ff00 |" in lineage
    assert "records" not in lineage


def test_usage_snippet_uses_auto_classes_and_chat_template():
    card = render_model_card(make_info())
    usage = card.split("## How to use")[1]
    for needle in ("AutoModelForCausalLM", "AutoTokenizer", "apply_chat_template", '"tiny-chat"'):
        assert needle in usage


def test_minimal_info_renders():
    card = render_model_card(ModelCardInfo(model_name="m"))
    assert "_not recorded_" in card and "| git commit | unknown |" in card
