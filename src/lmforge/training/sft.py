"""Supervised fine-tuning entry point, run on every rank: ``python -m lmforge.training.sft --config job.json``.

Starts from a Hugging Face model directory (our pretrain checkpoint or any local HF model), reads
tokenized conversations (``input_ids`` + ``labels`` masked to assistant turns) and runs the shared
DeepSpeed loop. Launched by ``lmforge.training.launch``.
"""

from __future__ import annotations

import json

from lmforge.training.config import load_job_spec


def load_examples(path: str) -> list[tuple[list[int], list[int]]]:
    examples = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                    examples.append((record["input_ids"], record["labels"]))
                except (json.JSONDecodeError, KeyError) as err:
                    raise ValueError(f"{path}:{lineno}: bad SFT example ({err})") from None
    if not examples:
        raise ValueError(f"{path}: no SFT examples")
    return examples


def main(argv: list[str] | None = None) -> None:
    spec = load_job_spec("lmforge SFT worker (started by the launcher on each rank)", argv)

    import torch
    from transformers import AutoModelForCausalLM

    from lmforge.training.data import collate_examples, sample_indices
    from lmforge.training.loop import init_distributed, train

    rank, world = init_distributed()
    torch.manual_seed(spec.train.seed)
    if not spec.init_from:
        raise ValueError("SFT needs init_from: a Hugging Face model directory")
    model = AutoModelForCausalLM.from_pretrained(
        spec.init_from, dtype=torch.float32, attn_implementation=spec.model.get("attn_implementation", "sdpa"))
    examples = load_examples(spec.data["examples"])
    pad_id = int(spec.data["pad_id"])

    def next_batch(step: int, micro: int) -> dict:
        idx = sample_indices(step, micro, rank, world_size=world, micro_batch_size=spec.train.micro_batch_size,
                             accumulation=spec.train.gradient_accumulation_steps, n_items=len(examples),
                             seed=spec.train.seed)
        return collate_examples([examples[int(i)] for i in idx], pad_id)

    train(spec, model, next_batch, rank=rank, world_size=world, epoch_size=len(examples))


if __name__ == "__main__":
    main()
