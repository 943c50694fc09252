"""Pretraining entry point, run on every rank: ``python -m lmforge.training.pretrain --config job.json``.

Builds the preset model (single-device code), or loads ``init_from`` (continued pretraining of a
local Hugging Face model, ``pretrain.base_model``), reads the packed token shards (the tokenizer
stage's, or the base model's own: memory-mapped; the tokenizer hash is checked at open) and runs the
shared DeepSpeed loop. Launched by ``lmforge.training.launch``; not meant to be imported by Kedro code.
"""

from __future__ import annotations

import json
import os

from lmforge.processes import guard_process
from lmforge.training.config import load_job_spec


def main(argv: list[str] | None = None) -> None:
    guard_process()  # end with the launcher or the process that owns the job ($LMFORGE_OWNER), however they end
    spec = load_job_spec("lmforge pretraining worker (started by the launcher on each rank)", argv)

    import numpy as np
    import torch

    from lmforge.model.build import build_model
    from lmforge.model.presets import Preset
    from lmforge.tokenizer.shards import TokenShards
    from lmforge.training.data import sample_indices
    from lmforge.training.loop import finish_job, init_distributed, train

    rank, world = init_distributed()
    shards = TokenShards.open(spec.data.token_shards, expected_tokenizer_sha256=spec.tokenizer_sha256)
    n_blocks = shards.n_blocks("train")
    m = spec.model
    if spec.init_from:  # continued pretraining: the base model's own weights, in fp32 like a preset
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(spec.init_from, dtype=torch.float32, local_files_only=True,
                                                     attn_implementation=m.attn_implementation,
                                                     trust_remote_code=m.trust_remote_code)
    else:
        model = build_model(Preset.from_name(m.preset, **m.overrides), seed=spec.train.seed, vocab_size=m.vocab_size,
                            bos_id=m.bos_id, eos_id=m.eos_id, pad_id=m.pad_id,
                            attn_implementation=m.attn_implementation)
    # train.fault_injection.sample_log_dir (tests): the sample ids of every micro-batch, per rank
    log_dir = spec.train.fault_injection.sample_log_dir
    sample_log = os.path.join(log_dir, f"rank{rank}.jsonl") if log_dir else None

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
