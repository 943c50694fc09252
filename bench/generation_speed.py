"""lmforge.generation's two engines: our batched KV-cache loop versus transformers ``model.generate`` (same model, prompts, batches).

    .venv/bin/python bench/generation_speed.py [--max-new-tokens 64] [--batch-sizes 8,1] [--rounds 3] [--threads 1] [--quick]

The model is the packaged default (data/07_model_output/lmforge-chat, prompts through its chat
template) when it exists, else the ``tiny`` preset with random weights (seed 0) and prompts encoded as
UTF-8 bytes + 6 in a ChatML-shaped frame (no tokenizer needed); the JSON says which. 32 fixed chat
prompts, left-padded batches in the same order for both, greedy, ``min_new_tokens = max_new_tokens``
so both generate exactly the same number of tokens (no early exit helps ours). Per batch size, the
contenders alternate for ``--rounds`` rounds and each keeps its best; the ratio is ours / transformers
in generated tokens per second. The outputs are compared token for token.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
logger = logging.getLogger("bench.generation_speed")

PACKAGED_MODEL = ROOT / "data/07_model_output/lmforge-chat"

TOPICS = [
    "returns the sum of a list of numbers", "reverses a string", "checks whether a number is prime",
    "counts the words in a sentence", "merges two sorted lists", "flattens a nested list",
    "computes the factorial of n", "finds the largest element of a list", "removes duplicates from a list",
    "converts Celsius to Fahrenheit", "parses a CSV line into fields", "returns the n-th Fibonacci number",
    "checks whether a string is a palindrome", "computes the mean of a list", "reads a file and counts its lines",
    "sorts a dictionary by value",
]
PROMPTS = ([f"Write a Python function that {t}." for t in TOPICS]
           + [f"Explain in one paragraph how to write a function that {t}." for t in TOPICS])
"""32 fixed chat prompts of unequal length (so batches are left-padded)."""


def load_contender_model(threads: int):
    """(model, prompt ids, stop ids, pad id, description) for the packaged model or the tiny fallback."""
    import torch

    torch.set_num_threads(threads)
    if (PACKAGED_MODEL / "config.json").is_file():
        from lmforge.generation import (
            encode_prompt,
            load_model_and_tokenizer,
            resolve_pad_token_id,
            resolve_stop_token_ids,
        )

        model, tokenizer = load_model_and_tokenizer(PACKAGED_MODEL)
        stop_ids = resolve_stop_token_ids(tokenizer)
        pad_id = resolve_pad_token_id(tokenizer, stop_ids)
        prompt_ids = [encode_prompt(tokenizer, p, chat=True) for p in PROMPTS]
        return model, prompt_ids, stop_ids, pad_id, {
            "model": "packaged", "path": str(PACKAGED_MODEL.relative_to(ROOT)),
            "prompt_encoding": "the package's tokenizer and chat template"}

    from lmforge.model.build import build_model
    from lmforge.model.presets import Preset

    model = build_model(Preset.from_name("tiny"), seed=0).eval()
    bos, eos, pad, im_start, im_end = 1, 2, 3, 4, 5

    def encode(text: str) -> list[int]:
        return [6 + b for b in text.encode("utf-8")]

    prompt_ids = [[bos, im_start, *encode("user\n" + p), im_end, *encode("\n"), im_start, *encode("assistant\n")]
                  for p in PROMPTS]
    return model, prompt_ids, [eos, im_end], pad, {
        "model": "tiny preset, random weights (seed 0): no packaged model at " + str(PACKAGED_MODEL.relative_to(ROOT)),
        "prompt_encoding": "UTF-8 bytes + 6 in a ChatML frame (no tokenizer)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", default="8,1", help="comma-separated batch sizes to compare at")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--with-stops", action=argparse.BooleanOptionalAction, default=True,
                        help="also compare with stop tokens on (rows end at EOS/<|im_end|>; early exit helps ours)")
    parser.add_argument("--quick", action="store_true", help="8 prompts, 8 tokens, 1 round; nothing saved")
    parser.add_argument("--out", default=str(ROOT / "bench/results/generation_speed.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    from lmforge.evaluation.speed import compare_generation_speed_ids

    model, prompt_ids, stop_ids, pad_id, described = load_contender_model(args.threads)
    if args.quick:
        prompt_ids, args.max_new_tokens, args.rounds = prompt_ids[:8], 8, 1
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model: %s (%.1fM params); %d prompts, %d new tokens, batch sizes %s, %d rounds",
                described["model"], n_params / 1e6, len(prompt_ids), args.max_new_tokens, args.batch_sizes,
                args.rounds)
    by_batch, with_stops = {}, {}
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        for equal, into in ((True, by_batch), (False, with_stops)):
            if not equal and not args.with_stops:
                continue
            comparison = compare_generation_speed_ids(model, prompt_ids, stop_ids=stop_ids, pad_id=pad_id,
                                                      max_new_tokens=args.max_new_tokens, batch_size=batch_size,
                                                      rounds=args.rounds, equal_lengths=equal)
            into[str(batch_size)] = comparison
            logger.info("batch %d%s: ours %.1f tokens/s, transformers %.1f tokens/s -> %.2fx; outputs equal %s",
                        batch_size, "" if equal else " (stop tokens on)", comparison["ours"]["tokens_per_s"],
                        comparison["transformers"]["tokens_per_s"], comparison["tokens_per_s_ratio"],
                        comparison["outputs_equal"])
    result = {
        "what": "generated tokens/s of lmforge.generation.generate_batch vs transformers model.generate "
                "(greedy, same left-padded batches, min_new_tokens = max_new_tokens), best of rounds",
        **described,
        "model_type": model.config.model_type, "params": n_params,
        "prompts": len(prompt_ids), "prompt_tokens": sum(len(p) for p in prompt_ids),
        "max_new_tokens": args.max_new_tokens, "rounds": args.rounds, "threads": args.threads,
        "device": str(next(model.parameters()).device),
        "by_batch_size": by_batch,
        "tokens_per_s_ratio": {b: c["tokens_per_s_ratio"] for b, c in by_batch.items()},
        "outputs_equal": all(c["outputs_equal"] for c in [*by_batch.values(), *with_stops.values()]),
        "with_stop_tokens": {
            "what": "same prompts, rows stop on EOS/<|im_end|> (no min_new_tokens): ours drops finished rows, "
                    "generate keeps computing them; not part of the target ratio",
            "by_batch_size": with_stops,
            "tokens_per_s_ratio": {b: c["tokens_per_s_ratio"] for b, c in with_stops.items()},
        },
        "target_ratio": 1.0,
        "load_average_after": os.getloadavg(),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "transformers": __import__("transformers").__version__, "cpus": os.cpu_count()},
    }
    text = json.dumps(result, indent=2) + "\n"
    if not args.quick:
        Path(args.out).write_text(text)
        logger.info("wrote %s", args.out)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
