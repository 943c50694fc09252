"""MissingInputHooks: a missing stage input stops the run with one line naming the command that makes it."""

from __future__ import annotations

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline

from lmforge.hooks import MissingInputError, MissingInputHooks
from lmforge.pipelines.datasets import ArtifactDirectory


def identity(x, params):
    return x


@pytest.fixture
def configured_project(monkeypatch, project_root):
    """kedro.framework.project.pipelines resolves the project's registry (needs the project configured)."""
    from kedro.framework.project import configure_project

    monkeypatch.chdir(project_root)
    configure_project("lmforge")


def run_hook(pipeline, catalog):
    MissingInputHooks().before_pipeline_run(run_params={}, pipeline=pipeline, catalog=catalog)


def test_missing_input_names_the_pipeline_that_produces_it(configured_project, tmp_path):
    missing = tmp_path / "data/06_models/tokenizer"
    pipeline = Pipeline([Node(identity, ["tokenizer", "params:x"], "out", name="use_tokenizer")])
    catalog = DataCatalog({"tokenizer": ArtifactDirectory(str(missing)), "params:x": MemoryDataset({"a": 1})})

    with pytest.raises(SystemExit) as err:
        run_hook(pipeline, catalog)

    message = str(err.value)
    assert isinstance(err.value, MissingInputError)
    assert "\n" not in message
    assert "'tokenizer'" in message
    assert str(missing) in message
    assert "kedro run --pipelines tokenizer" in message


def test_several_missing_inputs_report_the_first_and_count_the_rest(configured_project, tmp_path):
    pipeline = Pipeline([Node(identity, ["token_shards", "pretrain_checkpoint"], "out", name="use_both")])
    catalog = DataCatalog({"token_shards": ArtifactDirectory(str(tmp_path / "tokens")),
                           "pretrain_checkpoint": ArtifactDirectory(str(tmp_path / "pretrain"))})

    with pytest.raises(MissingInputError) as err:
        run_hook(pipeline, catalog)

    message = str(err.value)
    assert "\n" not in message
    assert "'pretrain_checkpoint'" in message  # inputs are checked in sorted order
    assert "1 more" in message
    command = message.split("kedro run --pipelines ")[1].split("`")[0]
    assert {"tokenizer", "pretrain"} <= set(command.split(","))


def test_input_no_pipeline_produces_points_at_the_catalog(configured_project, tmp_path):
    pipeline = Pipeline([Node(identity, ["external_corpus", "params:x"], "out", name="use_external")])
    catalog = DataCatalog({"external_corpus": ArtifactDirectory(str(tmp_path / "nothing")),
                           "params:x": MemoryDataset({})})

    with pytest.raises(MissingInputError, match="add it to conf/base/catalog.yml"):
        run_hook(pipeline, catalog)


def test_present_inputs_pass(tmp_path):
    existing = tmp_path / "tokenizer"
    existing.mkdir()
    (existing / "tokenizer.model").write_text("m")
    pipeline = Pipeline([Node(identity, ["tokenizer", "params:x"], "out", name="use_tokenizer")])
    catalog = DataCatalog({"tokenizer": ArtifactDirectory(str(existing)), "params:x": MemoryDataset({})})

    assert run_hook(pipeline, catalog) is None


def finetune(examples, checkpoint, params):
    return examples


def sft_like(extra_consumer: str | None = None) -> Pipeline:
    nodes = [Node(finetune, ["examples", "pretrain_checkpoint", "params:sft"], "sft_checkpoint", name="finetune_model")]
    if extra_consumer:
        nodes.append(Node(identity, ["pretrain_checkpoint", "sft_checkpoint"], "report", name=extra_consumer))
    return Pipeline(nodes)


def sft_catalog(tmp_path, base_model) -> DataCatalog:
    return DataCatalog({"examples": MemoryDataset([1]),
                        "pretrain_checkpoint": ArtifactDirectory(str(tmp_path / "pretrain"), missing_ok=True),
                        "params:sft": MemoryDataset({"base_model": base_model, "train": {}})})


def test_sft_with_a_base_model_does_without_the_pretrain_checkpoint(tmp_path):
    catalog = sft_catalog(tmp_path, str(tmp_path / "hf_model"))

    assert run_hook(sft_like(), catalog) is None
    assert catalog.load("pretrain_checkpoint") == str((tmp_path / "pretrain").resolve())  # missing_ok: its path


def test_sft_without_a_base_model_still_needs_the_pretrain_checkpoint(configured_project, tmp_path):
    with pytest.raises(MissingInputError) as err:
        run_hook(sft_like(), sft_catalog(tmp_path, None))

    assert "'pretrain_checkpoint'" in str(err.value) and "kedro run --pipelines" in str(err.value)


def test_base_model_exempts_sft_only_not_another_consumer(configured_project, tmp_path):
    pipeline = sft_like(extra_consumer="compare_with_pretrain")  # a node that needs the pretrain checkpoint anyway
    catalog = sft_catalog(tmp_path, str(tmp_path / "hf_model"))

    with pytest.raises(MissingInputError, match="'pretrain_checkpoint'"):
        run_hook(pipeline.only_nodes("compare_with_pretrain"), catalog)
    with pytest.raises(MissingInputError, match="'pretrain_checkpoint'"):
        run_hook(pipeline, catalog)


def test_base_model_exempts_evaluation_too(tmp_path):
    """With sft.base_model set, evaluation compares the SFT model with that model, not the pretrain checkpoint."""
    pipeline = sft_like(extra_consumer="evaluate_models")
    catalog = sft_catalog(tmp_path, str(tmp_path / "hf_model"))
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "config.json").write_text("{}")
    catalog["sft_checkpoint"] = ArtifactDirectory(str(tmp_path / "sft"))

    assert run_hook(pipeline.only_nodes("evaluate_models"), catalog) is None


def test_a_directory_without_missing_ok_still_refuses_to_load(tmp_path):
    from kedro.io import DatasetError

    with pytest.raises(DatasetError, match="produce it first"):
        ArtifactDirectory(str(tmp_path / "pretrain")).load()


def test_disk_io_hook_logs_the_stage_reads_and_writes_into_the_run(tmp_path, monkeypatch, mlflow_tracking_uri):
    import mlflow

    import lmforge.hooks as hooks

    counters = iter([(100 * 2**20, 50 * 2**20), (130 * 2**20, 90 * 2**20)])  # start, end (bytes)
    monkeypatch.setattr(hooks, "disk_io_bytes", lambda: next(counters))
    hook = hooks.DiskIOHooks()
    mlflow.set_tracking_uri(mlflow_tracking_uri)
    with mlflow.start_run() as run:
        hook.before_pipeline_run({}, None, None)
        hook.after_pipeline_run({}, None, None, None)
    metrics = mlflow.get_run(run.info.run_id).data.metrics
    assert metrics["io.disk_read_mb"] == pytest.approx(30.0) and metrics["io.disk_write_mb"] == pytest.approx(40.0)
    assert metrics["io.disk_mb_per_s"] > 70.0  # 70 MB over the microseconds between the two calls


def test_disk_io_counters_see_a_synced_write(tmp_path):
    import os

    from lmforge.hooks import disk_io_bytes

    before = disk_io_bytes()
    if before is None:
        pytest.skip("psutil gives no block-device counters here")
    with open(tmp_path / "blob", "wb") as fh:
        fh.write(os.urandom(8 * 2**20))
        fh.flush()
        os.fsync(fh.fileno())
    after = disk_io_bytes()
    assert after[1] - before[1] >= 8 * 2**20 * 0.9  # the 8 MB reached the disk


def test_an_input_several_parameters_exempt_is_free_when_any_is_set(configured_project, tmp_path):
    """token_shards: pretrain does without it under pretrain.base_model, evaluation under either base_model."""
    pipeline = Pipeline([Node(identity, ["token_shards", "params:pretrain"], "checkpoint", name="pretrain_model"),
                         Node(finetune, ["token_shards", "checkpoint", "params:sft"], "report", name="evaluate_models")])

    def catalog(pretrain_base, sft_base):
        return DataCatalog({"token_shards": ArtifactDirectory(str(tmp_path / "tokens"), missing_ok=True),
                            "checkpoint": MemoryDataset("ckpt"),
                            "params:pretrain": MemoryDataset({"base_model": pretrain_base}),
                            "params:sft": MemoryDataset({"base_model": sft_base})})

    assert run_hook(pipeline, catalog("/models/gemma", None)) is None
    assert run_hook(pipeline.only_nodes("evaluate_models"), catalog(None, "/models/gemma")) is None
    with pytest.raises(MissingInputError, match="'token_shards'"):
        run_hook(pipeline, catalog(None, "/models/gemma"))  # pretrain (no base model) still needs the shards


@pytest.mark.parametrize("enabled", [True, False])
def test_packaging_needs_the_gguf_folder_only_with_the_engine_step_on(enabled, configured_project, tmp_path):
    """``quantized_models`` is freed by ``packaging.engine.enabled: false`` (an OPTIONAL_INPUTS ``name=false`` entry)."""
    pipeline = Pipeline([Node(identity, ["quantized_models", "params:packaging"], "out", name="package_chat_model")])
    catalog = DataCatalog({"quantized_models": ArtifactDirectory(str(tmp_path / "gguf"), missing_ok=True),
                           "params:packaging": MemoryDataset({"engine": {"enabled": enabled}})})
    if enabled:
        with pytest.raises(MissingInputError, match="'quantized_models'.*not produced yet"):
            run_hook(pipeline, catalog)
    else:
        assert run_hook(pipeline, catalog) is None
