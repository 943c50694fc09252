"""Checkpoint manifests, verification, keep-last-N and the job fingerprint (no DeepSpeed: fake checkpoint files)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from lmforge.training import checkpoints as ck
from lmforge.training.config import FaultInjection, JobData, JobModel, JobSpec, TrainArgs


def fake_checkpoint(root: Path, step: int, fingerprint: str = "f" * 64, world_size: int = 2,
                    global_batch: int = 8) -> Path:
    tag_dir = root / ck.tag_for_step(step)
    tag_dir.mkdir(parents=True)
    (tag_dir / "mp_rank_00_model_states.pt").write_bytes(bytes(range(256)) * (step + 1))
    (tag_dir / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"optim" * 100)
    ck.write_manifest(root, tag_dir.name, step=step, fingerprint=fingerprint, world_size=world_size,
                      global_batch=global_batch)
    return tag_dir


def test_latest_points_at_the_last_manifest_and_resume_takes_the_newest(tmp_path):
    for step in (4, 8):
        fake_checkpoint(tmp_path, step)

    assert (tmp_path / ck.LATEST).read_text() == "step_00000008"
    assert ck.find_resume_checkpoint(tmp_path, "f" * 64, 8) == ("step_00000008", [])


def test_truncated_newest_checkpoint_is_skipped_with_a_warning_naming_it(tmp_path, caplog):
    fake_checkpoint(tmp_path, 4)
    newest = fake_checkpoint(tmp_path, 8)
    model_file = newest / "mp_rank_00_model_states.pt"
    model_file.write_bytes(model_file.read_bytes()[:100])

    with caplog.at_level(logging.WARNING, logger="lmforge.training"):
        tag, unusable = ck.find_resume_checkpoint(tmp_path, "f" * 64, 8)

    assert tag == "step_00000004"
    assert unusable == ["step_00000008"]
    assert "step_00000008" in caplog.text and "truncated" in caplog.text


def test_corrupted_file_of_the_same_size_is_caught_by_the_hash(tmp_path):
    fake_checkpoint(tmp_path, 4)
    newest = fake_checkpoint(tmp_path, 8)
    optim = newest / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    optim.write_bytes(b"OPTIM" * 100)

    _, problem = ck.verify_checkpoint(newest)
    assert "corrupted" in problem
    assert ck.find_resume_checkpoint(tmp_path, "f" * 64, 8)[0] == "step_00000004"


def test_incomplete_save_without_manifest_is_never_resumed(tmp_path):
    fake_checkpoint(tmp_path, 4)
    (tmp_path / "step_00000008").mkdir()
    (tmp_path / "step_00000008" / "mp_rank_00_model_states.pt").write_bytes(b"partial")

    assert ck.find_resume_checkpoint(tmp_path, "f" * 64, 8) == ("step_00000004", ["step_00000008"])


@pytest.mark.parametrize("fingerprint, global_batch", [("e" * 64, 8), ("f" * 64, 16)])
def test_checkpoints_of_another_job_or_global_batch_are_not_resumed(tmp_path, fingerprint, global_batch):
    fake_checkpoint(tmp_path, 4)

    tag, unusable = ck.find_resume_checkpoint(tmp_path, fingerprint, global_batch)
    assert tag is None and unusable == ["step_00000004"]


def test_a_checkpoint_of_another_world_size_with_the_same_global_batch_is_resumed(tmp_path):
    fake_checkpoint(tmp_path, 4, world_size=2, global_batch=8)

    assert ck.find_resume_checkpoint(tmp_path, "f" * 64, 8) == ("step_00000004", [])
    assert ck.saved_world_size(tmp_path / "step_00000004") == 2
    assert ck.saved_global_batch(tmp_path, "f" * 64) == (8, 2)
    assert ck.saved_global_batch(tmp_path, "e" * 64) is None


@pytest.mark.parametrize("micro, world, accumulation", [(4, 1, 4), (4, 2, 2), (4, 4, 1), (2, 4, 2), (8, 1, 2)])
def test_rebatch_keeps_the_global_batch_by_changing_accumulation_only(micro, world, accumulation):
    train = ck.rebatch(TrainArgs(micro_batch_size=micro, gradient_accumulation_steps=1, lr=2e-3), 16, world)

    assert (train.micro_batch_size, train.gradient_accumulation_steps) == (micro, accumulation)
    assert ck.global_batch(train, world) == 16 and train.lr == 2e-3


@pytest.mark.parametrize("micro, world, nprocs, micros", [
    (4, 3, "[1, 2, 4]", None),  # no micro batch makes 3 processes fit 16
    (8, 4, "[1, 2]", "[1, 2, 4]"),
    (3, 1, "[]", "[1, 2, 4, 8, 16]"),
])
def test_rebatch_refuses_an_impossible_split_and_says_what_to_set(micro, world, nprocs, micros):
    with pytest.raises(ValueError) as err:
        ck.rebatch(TrainArgs(micro_batch_size=micro), 16, world, where="pretrain.train")
    message = str(err.value)
    assert f"cannot resume with {world} process(es)" in message and "global batch is 16" in message
    assert (f"launch.nproc_per_node x nnodes to one of {nprocs}" in message) == (nprocs != "[]")
    if micros:
        assert f"pretrain.train.micro_batch_size to one of {micros}" in message
    else:
        assert "micro_batch_size to one of" not in message


def test_prune_keeps_the_newest_complete_checkpoints(tmp_path):
    for step in (2, 4, 6):
        fake_checkpoint(tmp_path, step)
    (tmp_path / "step_00000001").mkdir()  # an old partial save

    removed = ck.prune_checkpoints(tmp_path, keep=2)

    assert sorted(removed) == ["step_00000001", "step_00000002"]
    assert ck.list_tags(tmp_path) == ["step_00000006", "step_00000004"]


def test_restart_count_round_trip(tmp_path):
    assert ck.read_restart_count(tmp_path) == 0
    ck.write_restart_count(tmp_path, 3)
    assert ck.read_restart_count(tmp_path) == 3


def _spec(tmp_path: Path, data_dir: Path, **train) -> JobSpec:
    return JobSpec(kind="pretrain", model=JobModel(attn_implementation="sdpa", preset="debug"), init_from=None,
                   data=JobData(token_shards=str(data_dir)), train=TrainArgs(**train), deepspeed={"zero_optimization": {"stage": 2}},
                   output_dir=str(tmp_path / "out"), run_dir=str(tmp_path / "run"), metric_prefix="pretrain",
                   tokenizer_sha256="t" * 64)


def test_fingerprint_follows_content_params_and_tokenizer_not_paths(tmp_path):
    shards = tmp_path / "tokens"
    shards.mkdir()
    (shards / "index.json").write_text('{"seq_len": 64}')
    (shards / "train-00000.npy").write_bytes(b"\x01\x02" * 50)
    copy = tmp_path / "elsewhere" / "tokens"
    copy.mkdir(parents=True)
    for f in shards.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    base = ck.fingerprint_job(_spec(tmp_path, shards))

    moved = _spec(tmp_path / "other", copy, log_every=5, checkpoint_every=7, keep_checkpoints=9,
                  fault_injection=FaultInjection(nan_at_steps=[3], kill_after_checkpoint_step=7, sample_log_dir="x"))
    assert ck.fingerprint_job(moved) == base  # paths, bookkeeping settings and test hooks do not count
    assert ck.fingerprint_job(_spec(tmp_path, shards, lr=2e-3)) != base
    # how the global batch is split is not part of the job (the manifest keeps the global batch)
    split = replace(_spec(tmp_path, shards, micro_batch_size=2, gradient_accumulation_steps=4),
                    deepspeed={"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": 2,
                               "gradient_accumulation_steps": 4})
    assert ck.fingerprint_job(split) == base
    assert ck.fingerprint_job(replace(_spec(tmp_path, shards), tokenizer_sha256="u" * 64)) != base
    (copy / "train-00000.npy").write_bytes(b"\x01\x03" * 50)  # same size, new tokens
    assert ck.fingerprint_job(_spec(tmp_path, copy)) != base


def test_train_args_validate_the_new_fields():
    with pytest.raises(ValueError, match="nan_policy"):
        TrainArgs(nan_policy="ignore")
    with pytest.raises(ValueError, match="checkpoint_verify"):
        TrainArgs(checkpoint_verify="md5")
    with pytest.raises(ValueError, match="keep_checkpoints"):
        TrainArgs(keep_checkpoints=0)


def test_a_rerun_with_fewer_processes_keeps_the_checkpoint_global_batch(tmp_path, deepspeed_templates, caplog):
    from lmforge.training.config import DeepSpeedArgs, LaunchArgs
    from lmforge.training.deepspeed_config import build_deepspeed_config
    from lmforge.training.jobs import keep_checkpoint_batch

    def spec_for() -> JobSpec:
        train = TrainArgs(micro_batch_size=4, gradient_accumulation_steps=1)
        return JobSpec(kind="pretrain", model=JobModel(attn_implementation="sdpa"), init_from=None, data=JobData(),
                       train=train,
                       deepspeed=build_deepspeed_config(deepspeed_templates, train, DeepSpeedArgs(zero_stage=2)),
                       output_dir=str(tmp_path / "out"), run_dir=str(tmp_path), metric_prefix="pretrain",
                       fingerprint="f" * 64)

    fake_checkpoint(tmp_path / "checkpoints", 10, world_size=2, global_batch=8)

    same = spec_for()
    keep_checkpoint_batch(same, LaunchArgs(nproc_per_node=2), deepspeed_templates, DeepSpeedArgs(zero_stage=2))
    assert same.train.gradient_accumulation_steps == 1  # nothing to change

    fewer = spec_for()
    with caplog.at_level(logging.WARNING, logger="lmforge.training.jobs"):
        keep_checkpoint_batch(fewer, LaunchArgs(nproc_per_node=1), deepspeed_templates, DeepSpeedArgs(zero_stage=2))
    assert fewer.train.gradient_accumulation_steps == 2 and fewer.deepspeed["gradient_accumulation_steps"] == 2
    assert "gradient_accumulation_steps 1 -> 2 keeps its global batch of 8" in caplog.text

    with pytest.raises(ValueError, match="cannot resume with 3 process"):
        keep_checkpoint_batch(spec_for(), LaunchArgs(nproc_per_node=3), deepspeed_templates,
                              DeepSpeedArgs(zero_stage=2))
