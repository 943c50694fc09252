"""sft pipeline, data part: the default mix (translation, dialogue, faq, code, identity) built by the
``build_conversations`` node on an in-memory catalog from a tiny literal source cache."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import yaml
from chat_samples import write_chat_cache
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from lmforge.pipelines.sft import create_pipeline

CODE = '''def add(a, b):
    """Return the sum of a and b."""
    total = a + b
    return total


def scale(x, k):
    """Multiply x by k."""
    result = x * k
    return result
'''


@pytest.fixture
def documents():
    docs = [{"id": f"mod{i}", "text": CODE, "source": "stdlib", "metadata": {"kind": "code", "license": "PSF-2.0"}}
            for i in range(20)]
    docs.append({"id": "zh-page", "text": "这是中文文档。", "source": "manpages-zh",
                 "metadata": {"language_group": "zh", "license": "GPL-2.0-or-later"}})
    return {"part-0": docs}


def run_data_nodes(project_root, documents, cache, **overrides):
    params = copy.deepcopy(yaml.safe_load((project_root / "conf/base/parameters_sft.yml").read_text())["sft"])
    params.update(overrides)
    catalog = DataCatalog({"clean_documents": MemoryDataset(documents), "params:sft": MemoryDataset(params),
                           "params:data_processing.source_cache": MemoryDataset(str(cache))})
    pipeline = create_pipeline().only_nodes("build_sft_config", "build_conversations")
    out = SequentialRunner().run(pipeline, catalog)
    return {name: (catalog[name].load() if name in catalog else out[name].load())
            for name in ("sft_train_conversations", "sft_validation_conversations", "sft_quarantine",
                         "sft_conversation_stats")}


def test_default_mix_has_every_category_and_language_with_held_out_splits(project_root, documents, tmp_path):
    cache = write_chat_cache(tmp_path / "00_sources", pages=12)
    out = run_data_nodes(project_root, documents, cache)
    train, validation = out["sft_train_conversations"], out["sft_validation_conversations"]
    stats = out["sft_conversation_stats"]

    categories = Counter(c["category"] for c in train)
    assert set(categories) == {"translation", "dialogue", "faq", "code", "identity"}
    assert categories["identity"] == 28 * 40  # identity.repeat
    assert all(c["metadata"]["language_group"] in {"en", "zh", "ja", "code"} for c in train)
    # the realised mix counts per category and per language, and they add up
    mix = stats["mix"]
    assert mix["by_category"] == dict(sorted(categories.items()))
    assert sum(mix["by_language"].values()) == len(train) == stats["train_conversations"]
    assert mix["by_language"]["code"] == categories["code"]
    assert {"en", "zh", "ja"} <= set(mix["sources"]["chatterbot_dialogue"]["languages"])

    # translation conversations carry their direction; no held-out page is trained on
    directions = {(c["metadata"]["src_lang"], c["metadata"]["tgt_lang"]) for c in train if c["category"] == "translation"}
    assert directions <= {("en", "zh"), ("zh", "en"), ("en", "ja"), ("ja", "en")} and len(directions) >= 3
    held = [c for c in validation if c["category"] == "translation"]
    assert held and all(c["metadata"]["src_lang"] and c["metadata"]["tgt_lang"] for c in held)
    assert not {c["metadata"]["page"] for c in held} & {c["metadata"]["page"] for c in train
                                                        if c["category"] == "translation"}
    assert {c["source"] for c in validation} <= {"libreoffice_translation", "chatterbot_dialogue", "debian_faq",
                                                 "corpus_instructions"}
    # the prose document gives no code pairs; the code documents do (split by document)
    assert stats["skipped"]["not_code"] == 1
    assert not {c["source_id"] for c in train if c["category"] == "code"} & {
        c["source_id"] for c in validation if c["category"] == "code"}


def test_a_missing_source_cache_stops_with_make_corpus(project_root, documents, tmp_path):
    with pytest.raises(Exception, match="make corpus"):
        run_data_nodes(project_root, documents, tmp_path / "empty")
    # the old mix needs no cache
    out = run_data_nodes(project_root, documents, tmp_path / "empty",
                         sources=[{"name": "corpus_instructions"}, {"name": "identity"}])
    assert {c["category"] for c in out["sft_train_conversations"]} == {"code", "identity"}
