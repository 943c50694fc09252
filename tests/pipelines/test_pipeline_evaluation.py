"""evaluation pipeline on an in-memory catalog: base and SFT checkpoints -> perplexities and generations."""

from __future__ import annotations

import copy
import math

import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from lmforge.pipelines.datasets import ArtifactDirectory
from lmforge.pipelines.evaluation import create_pipeline


@pytest.mark.slow  # its fixtures launch the 2-process pretraining and SFT runs
def test_evaluation_pipeline(project_root, chain_pretrain, chain_sft, chain_tokenizer_dir, chain_token_shards,
                             chain_conversations):
    params = copy.deepcopy(yaml.safe_load((project_root / "conf/base/parameters_evaluation.yml").read_text())[
        "evaluation"])
    params.update(batch_size=4, max_heldout_blocks=6, max_sft_examples=5)
    params["generation"]["max_new_tokens"] = 6
    params["humaneval"].update(n_problems=3, max_new_tokens=8)
    params["identity_probe"]["max_new_tokens"] = 8
    identity = {"name": "Forge", "developer": "the lmforge team"}
    prompts = params["generation"]["prompts"]
    catalog = DataCatalog({
        "pretrain_checkpoint": ArtifactDirectory(chain_pretrain[0]),
        "sft_checkpoint": ArtifactDirectory(chain_sft[0]),
        "tokenizer": ArtifactDirectory(chain_tokenizer_dir),
        "token_shards": ArtifactDirectory(chain_token_shards),
        "sft_validation_conversations": MemoryDataset(chain_conversations["validation"]),
        "params:evaluation": MemoryDataset(params),
        "params:sft.identity": MemoryDataset(identity),
    })

    outputs = SequentialRunner().run(create_pipeline(), catalog)

    metrics = outputs["evaluation_metrics"].load()
    generations = outputs["generations"].load()
    for model in ("base", "sft"):
        for split in ("heldout", "sft_pairs"):
            for metric in ("loss", "perplexity", "tokens", "bits_per_byte", "bytes"):
                assert f"{model}.{split}.{metric}" in metrics
        assert metrics[f"{model}.humaneval.problems"] == 3.0
        assert 0.0 <= metrics[f"{model}.humaneval.pass_at_1"] <= 1.0
        for metric in ("precision", "recall", "f1"):
            assert 0.0 <= metrics[f"{model}.identity.{metric}"] <= 1.0
    for split in ("heldout", "sft_pairs"):
        assert f"{split}.perplexity_ratio" in metrics
        assert f"{split}.loss_delta" in metrics
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert metrics["heldout_blocks"] == 6.0
    assert 0 < metrics["sft_examples"] <= 5
    assert metrics["base.heldout.tokens"] == metrics["sft.heldout.tokens"] > 0
    assert math.isclose(metrics["base.heldout.perplexity"], math.exp(metrics["base.heldout.loss"]), rel_tol=1e-6)
    assert math.isclose(metrics["sft_pairs.loss_delta"],
                        metrics["sft.sft_pairs.loss"] - metrics["base.sft_pairs.loss"], rel_tol=1e-9)

    assert set(generations) == {"base", "sft", "base.humaneval", "sft.humaneval", "base.identity_probe",
                                "sft.identity_probe"}
    assert len(generations["sft.identity_probe"]) == metrics["sft.identity.tp"] + metrics["sft.identity.fp"] + \
        metrics["sft.identity.fn"] + metrics["sft.identity.tn"]
    for samples in (generations["base"], generations["sft"]):
        assert [s["prompt"] for s in samples] == prompts
        assert all(1 <= s["new_tokens"] <= 6 and isinstance(s["completion"], str) for s in samples)
