"""tokenizer pipeline on an in-memory catalog: clean documents -> tokenizer directory + token shards."""

from __future__ import annotations

import json
from pathlib import Path

from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from mlflow_helpers import isolated_run, migrated_store

from lmforge.pipelines.datasets import ArtifactDirectory
from lmforge.pipelines.tokenizer import create_pipeline


def test_tokenizer_pipeline(tmp_path, chain_documents, chain_tokenizer_params, chain_split_texts, chain_split_labels):
    from transformers import AutoTokenizer

    from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
    from lmforge.tokenizer.shards import TokenShards

    tokenizer_dir, shards_dir = tmp_path / "data/06_models/tokenizer", tmp_path / "data/05_model_input/tokens"
    catalog = DataCatalog({
        "clean_documents": MemoryDataset(chain_documents),
        "params:tokenizer": MemoryDataset(chain_tokenizer_params),
        "tokenizer": ArtifactDirectory(str(tokenizer_dir)),
        "token_shards": ArtifactDirectory(str(shards_dir)),
    })

    outputs = SequentialRunner().run(create_pipeline(), catalog)

    metrics = outputs["tokenizer_metrics"].load()
    files = {p.name for p in tokenizer_dir.iterdir()}
    assert {"tokenizer.model", "tokenizer.json", "tokenizer_config.json"} <= files
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    assert config["chat_template"] == chain_tokenizer_params["chat_template"]

    index = json.loads((shards_dir / "index.json").read_text())
    assert index["seq_len"] == 64
    assert index["tokenizer_sha256"] == metrics["sha256"]
    assert index["documents"] == {name: len(texts) for name, texts in chain_split_texts.items()}
    shards = TokenShards.open(shards_dir, expected_tokenizer_sha256=metrics["sha256"])
    assert shards.n_blocks("train") == metrics["train_blocks"] > 0
    assert shards.n_blocks("validation") == metrics["validation_blocks"] > 0
    assert metrics["train_tokens"] == 64 * metrics["train_blocks"]
    assert all(Path(shards_dir, name).is_file() for split in index["splits"].values() for name in split["shards"])

    assert metrics["vocab_size"] == chain_tokenizer_params["train"]["vocab_size"]
    assert metrics["unknown_tokens"] == 0
    assert 1.0 < metrics["bytes_per_token"] < 10.0

    # Per language group (the readers' declared group): held-out figures and training tokens, all four groups.
    by_language = metrics["by_language"]
    assert set(by_language) == {"en", "zh", "ja", "code"}
    validation_docs = [label["language"] for label in chain_split_labels["validation"]]
    for group, entry in by_language.items():
        held_out = entry["validation"]
        assert held_out["documents"] == validation_docs.count(group)
        assert held_out["bytes_per_token"] == held_out["bytes"] / held_out["tokens"]
        assert held_out["unknown_tokens"] == 0
        assert 0 <= held_out["byte_fallback_rate"] < 1
        assert entry["train"]["documents"] == [label["language"] for label in chain_split_labels["train"]].count(group)
    sp = SentencePieceTokenizer.from_file(tokenizer_dir / "tokenizer.model")
    assert sum(e["validation"]["tokens"] for e in by_language.values()) == sum(
        len(sp.encode(text, parse_special=False)) for text in chain_split_texts["validation"])
    assert sum(e["validation"]["bytes"] for e in by_language.values()) == metrics["validation_bytes"]
    # the chain's tiny vocabulary covers only common CJK characters: the rest is byte fallback; code has none
    assert by_language["zh"]["validation"]["byte_fallback_tokens"] > 0
    assert by_language["code"]["validation"]["byte_fallback_rate"] < by_language["zh"]["validation"]["byte_fallback_rate"]
    # Training tokens by source (with licence) and licence reconcile with the packed blocks: each document's
    # tokens plus its EOS, less the tail that did not fill a block.
    by_source, by_license = metrics["by_source"], metrics["by_license"]
    assert {e["source"]: e["license"] for e in by_source.values()} == {
        "python-stdlib": "PSF-2.0", "libreoffice-help-en-us": "MPL-2.0", "libreoffice-help-zh-cn": "MPL-2.0",
        "libreoffice-help-ja": "MPL-2.0"}
    doc_tokens = sum(e["tokens"] for e in by_source.values())
    assert doc_tokens == sum(e["tokens"] for e in by_license.values()) == sum(
        e["train"]["tokens"] for e in by_language.values())
    assert 0 <= doc_tokens + len(chain_split_texts["train"]) - metrics["train_tokens"] < 64
    assert abs(sum(e["token_share"] for e in by_source.values()) - 1.0) < 1e-9

    hf = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    sample = chain_split_texts["validation"][0][:2000]
    assert hf.decode(hf.encode(sample, add_special_tokens=False)) == sample


def test_nodes_build_the_typed_config_once_and_log_it_resolved(tmp_path, chain_tokenizer_params):
    import mlflow

    from lmforge.pipelines.tokenizer.nodes import build_config
    from lmforge.tokenizer.config import TokenizerConfig

    with isolated_run(migrated_store(tmp_path / "mlflow.db")) as run:
        config = build_config(chain_tokenizer_params)
        params = mlflow.get_run(run.info.run_id).data.params

    assert isinstance(config, TokenizerConfig) and config.shards.seq_len == 64
    assert params["tokenizer.shards.seq_len"] == "64"
    assert params["tokenizer.executor.kind"] == "local"  # a default the params left out, logged resolved
    assert params["tokenizer.train.max_sentence_length"] == "16384"
