"""Pretraining entry point, run on every rank: ``python -m lmforge.training.pretrain --config job.json``.

Builds the preset model (single-device code), reads the packed token shards written by the
tokenizer stage (memory-mapped; the tokenizer hash is checked at open) and runs the shared
DeepSpeed loop. Launched by ``lmforge.training.launch``; not meant to be imported by Kedro code.
"""

from __future__ import annotations

import json
import os

from lmforge.training.config import load_job_spec


def main(argv: list[str] | None = None) -> None:
    spec = load_job_spec("lmforge pretraining worker (started by the launcher on each rank)", argv)

    import numpy as np
    import torch

    from lmforge.model.build import build_model
    from lmforge.model.presets import Preset
    from lmforge.tokenizer.shards import TokenShards
    from lmforge.training.data import sample_indices
    from lmforge.training.loop import finish_job, init_distributed, train

    rank, world = init_distributed()
    shards = TokenShards.open(spec.data["token_shards"], expected_tokenizer_sha256=spec.tokenizer_sha256)
    n_blocks = shards.n_blocks("train")
    model_cfg = dict(spec.model)
    preset = Preset.from_name(model_cfg.pop("preset"), **model_cfg.pop("overrides", {}))
    model = build_model(preset, seed=spec.train.seed, **model_cfg)
    # Test hook: LMFORGE_TEST_SAMPLE_LOG=<dir> appends the sample ids of every micro-batch to <dir>/rank<r>.jsonl.
    sample_log = os.environ.get("LMFORGE_TEST_SAMPLE_LOG")
    sample_log = os.path.join(sample_log, f"rank{rank}.jsonl") if sample_log else None

    def next_batch(step: int, micro: int) -> dict:
        idx = sample_indices(step, micro, rank, world_size=world, micro_batch_size=spec.train.micro_batch_size,
                             accumulation=spec.train.gradient_accumulation_steps, n_items=n_blocks,
                             seed=spec.train.seed)
        ids = torch.from_numpy(np.stack([shards.block("train", int(i)) for i in idx]).astype(np.int64))
        if sample_log:
            with open(sample_log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": step, "micro": micro, "rank": rank, "ids": idx.tolist()}) + "\n")
        return {"input_ids": ids, "labels": ids}

    train(spec, model, next_batch, rank=rank, world_size=world, epoch_size=n_blocks)
    finish_job(spec.run_dir, rank)


if __name__ == "__main__":
    main()
