"""Held-out bits per byte of each GGUF file as llama.cpp computes it versus transformers' dequantized load.

    .venv/bin/python bench/quantization_engine.py [--gguf data/06_models/gguf] [--blocks 2] [--positions 64]
                     [--formats f32,q8_0,q4_k_m]

The evaluation stage scores a GGUF file after transformers dequantized its weights
(``lmforge.evaluation.quantization``): that measures weight quantization only. llama.cpp's CPU kernels
also round the activations to 8 bits inside the q8_0/q4_k_m matrix products; this script measures
what that adds. Both score the same validation token blocks (the tokenizer stage's shards, the first
``--blocks``, cut to their first ``--positions`` + 1 tokens: the engine's responses carry the whole
vocabulary) in the same ids, as the stage does: every position but the first of a block is a target,
bits per byte over the targets' UTF-8 bytes. The engine: ``llama-server`` (``lmforge.engine.server``)
on the GGUF file, one ``/completion`` per position with the block's prefix as token ids (the KV cache
of the previous prefix reused), ``n_predict`` 1 and ``n_probs`` = the vocabulary, so the response
holds the target's log-probability (the softmax of the raw logits: no sampler touches them). The
server has no prompt log-probabilities, hence one request per position. Results:
``bench/results/quantization_engine.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
logger = logging.getLogger("bench.quantization_engine")


def engine_nats(url: str, blocks: list[list[int]], vocab: int) -> list[float]:
    """Summed negative log-probability (nats) of each block's targets, as llama-server computes it."""
    out = []
    for block in blocks:
        nats = 0.0
        for t in range(1, len(block)):
            body = {"prompt": block[:t], "n_predict": 1, "n_probs": vocab, "temperature": 0, "cache_prompt": True}
            request = urllib.request.Request(f"{url}/completion", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as response:
                probs = json.loads(response.read())["completion_probabilities"][0]["top_logprobs"]
            logprob = next((p["logprob"] for p in probs if p["id"] == block[t]), None)
            if logprob is None:
                raise RuntimeError(f"target id {block[t]} not among the {len(probs)} returned probabilities")
            nats -= logprob
        out.append(nats)
    return out


def hf_nats(model, blocks: list[list[int]]) -> list[float]:
    """The same per block from ``lmforge.evaluation.perplexity`` (the stage's scorer)."""
    from lmforge.evaluation.perplexity import evaluate_lm_perplexity

    return [evaluate_lm_perplexity(model, [block], batch_size=1)["loss"] * (len(block) - 1) for block in blocks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", default=str(ROOT / "data/06_models/gguf"), help="folder with quantization.json")
    parser.add_argument("--tokenizer", default=str(ROOT / "data/06_models/tokenizer"))
    parser.add_argument("--shards", default=str(ROOT / "data/05_model_input/tokens"))
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--positions", type=int, default=64, help="targets scored per block (its first tokens)")
    parser.add_argument("--formats", default="f32,q8_0,q4_k_m")
    parser.add_argument("--quick", action="store_true", help="1 block, nothing saved")
    parser.add_argument("--out", default=str(ROOT / "bench/results/quantization_engine.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from lmforge.engine.server import LlamaServer
    from lmforge.evaluation.perplexity import token_byte_lengths
    from lmforge.evaluation.quantization import MANIFEST, load_gguf_model
    from lmforge.tokenizer.artifact import load_tokenizer
    from lmforge.tokenizer.shards import TokenShards

    gguf_dir = Path(args.gguf)
    manifest = json.loads((gguf_dir / MANIFEST).read_text(encoding="utf-8"))
    tok, _ = load_tokenizer(args.tokenizer)
    shards = TokenShards.open(args.shards, expected_tokenizer_sha256=tok.sha256)
    n_blocks = 1 if args.quick else min(args.blocks, shards.n_blocks("validation"))
    blocks = [[int(i) for i in shards.block("validation", b)][: args.positions + 1] for b in range(n_blocks)]
    token_bytes = token_byte_lengths(tok)
    n_bytes = sum(int(token_bytes[block[1:]].sum()) for block in blocks)
    results = {}
    for fmt in args.formats.split(","):
        path = gguf_dir / manifest["formats"][fmt]["file"]
        started = time.perf_counter()
        hf = sum(hf_nats(load_gguf_model(path), blocks))
        with LlamaServer(path, parallel=1, ctx_size=len(blocks[0]) + 8) as server:
            engine = sum(engine_nats(server.url, blocks, tok.vocab_size))
        hf_bpb, engine_bpb = hf / math.log(2) / n_bytes, engine / math.log(2) / n_bytes
        results[fmt] = {"transformers_dequantized_bpb": hf_bpb, "engine_bpb": engine_bpb,
                        "engine_vs_dequantized_pct": 100 * (engine_bpb / hf_bpb - 1), "seconds": time.perf_counter() - started}
        logger.info("%s: dequantized %.5f, engine %.5f bits/byte (%+.3f%%)", fmt, hf_bpb, engine_bpb,
                    results[fmt]["engine_vs_dequantized_pct"])
    reference = results.get("f32", {}).get("engine_bpb")
    for r in results.values():
        if reference:
            r["engine_delta_vs_engine_f32_pct"] = 100 * (r["engine_bpb"] / reference - 1)
            r["dequantized_delta_vs_f32_pct"] = 100 * (r["transformers_dequantized_bpb"]
                                                       / results["f32"]["transformers_dequantized_bpb"] - 1)
    report = {"gguf": str(gguf_dir), "model": manifest.get("model"), "source_model": manifest.get("source_model"),
              "blocks": n_blocks, "block_tokens": len(blocks[0]), "target_bytes": n_bytes,
              "machine": platform.platform(), "formats": results}
    logger.info("%s", json.dumps(report, indent=2))
    if not args.quick:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
