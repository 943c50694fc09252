"""Exact resume after SIGKILL (real 2-process DeepSpeed ZeRO-2 runs on CPU). Skipping non-finite steps
(``train.nan_policy: skip``) is checked on the pretrain pipeline test's run (tests/pipelines/test_pipeline_pretrain.py).

The uninterrupted reference is the session's ZeRO-2 chain run (``chain_pretrain_runs(2)``: debug
preset, 64-token shards, 20 steps, no checkpoint). The killed run is the same job with a checkpoint
every 5 steps, stopped by the loop's fault injection (``train.fault_injection.kill_after_checkpoint_step``): right after
the step-10 checkpoint is complete, rank 0 SIGKILLs every worker's process group and the launcher's. The killed
run is the session's ``killed_pretrain_run`` (test_training_resume_world_size.py resumes another copy of it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

STEPS, EVERY, KILL_AFTER = 20, 5, 10


def _params(training_params_factory, run_dir: Path, **train) -> dict:
    params = training_params_factory(run_dir, steps=STEPS, model={"preset": "debug", "overrides": {}})
    params["train"].update({"checkpoint_every": EVERY, "keep_checkpoints": 2, **train})
    return params


def test_killed_run_resumes_to_the_same_loss_and_weights(tmp_path, chain_pretrain_runs, killed_pretrain_run,
                                                         chain_token_shards, chain_tokenizer_dir, deepspeed_templates,
                                                         training_params_factory, pretrain_config_factory):
    import shutil

    import torch
    from safetensors.torch import load_file

    from lmforge.training.checkpoints import LATEST, MANIFEST, list_tags
    from lmforge.training.jobs import run_pretraining

    def run(run_dir: Path, **faults):
        params = _params(training_params_factory, run_dir, fault_injection=faults)
        return run_pretraining(chain_token_shards, chain_tokenizer_dir, deepspeed_templates,
                               pretrain_config_factory(params))

    full_ckpt, full_metrics, full_curve = chain_pretrain_runs(2)
    assert full_metrics["steps"] == STEPS

    # the same job, killed right after its step-10 checkpoint (the session's killed run: a copy of it resumes here)
    killed = tmp_path / "killed"
    shutil.copytree(killed_pretrain_run / "run", killed)
    ckpts = killed / "checkpoints"
    assert list_tags(ckpts) == ["step_00000010", "step_00000005"]  # keep-last-2
    assert (ckpts / LATEST).read_text() == "step_00000010"
    assert json.loads((ckpts / "step_00000010" / MANIFEST).read_text())["step"] == KILL_AFTER

    resumed_ckpt, resumed_metrics, resumed_curve = run(killed)

    assert "resuming from" in (killed / "train.log").read_text()
    assert resumed_metrics["restart_count"] == 1 and full_metrics["restart_count"] == 0
    assert [r["loss"] for r in resumed_curve] == [r["loss"] for r in full_curve]
    assert resumed_metrics["final_loss"] == full_metrics["final_loss"]
    assert resumed_metrics["tokens"] == full_metrics["tokens"] == STEPS * 2 * 4 * 64
    full_w = load_file(Path(full_ckpt) / "model.safetensors")
    resumed_w = load_file(Path(resumed_ckpt) / "model.safetensors")
    assert full_w.keys() == resumed_w.keys()
    assert all(torch.equal(full_w[k], resumed_w[k]) for k in full_w)
    assert not ckpts.exists()  # a finished run leaves nothing to resume: the next run retrains
    # throughput and MFU reach the stage's report
    for key in ("mfu_cpu_measured_peak", "time_per_epoch_s", "epochs", "peak_rss_mb", "peak_flops_per_device"):
        assert full_metrics[key] > 0, key


# train.nan_policy: skip (with activation checkpointing): tests/pipelines/test_pipeline_pretrain.py's run injects the
# NaN step (it was a 5-step 2-process run of its own here, ~15 s clean).
