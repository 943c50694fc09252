"""Benchmark: encode throughput of lmforge's token-shard builder versus Hugging Face ``tokenizers``.

Same vocabulary, same input, same run. A BPE tokenizer (vocab 8k, project settings) is trained on the
input, exported with ``lmforge.tokenizer.export.export_hf_tokenizer`` and loaded back with
``tokenizers.Tokenizer.from_file(tokenizer.json)``. Then, alternating, ``--repeats`` times each:

- ours: ``stream_token_shards`` (encode + pack + write .npy shards) with 1 and with 2 processes;
- Hugging Face: ``Tokenizer.encode`` in a Python loop (one thread) and ``encode_batch`` (Rayon,
  all cores). HF only encodes: nothing is packed or written, so the comparison favours HF.

Throughput is MB of UTF-8 input per second (best of the repeats); ratios are ours / HF, with
1 process compared to HF's single-thread loop and 2 processes to ``encode_batch``. The machine is
shared and noisy: read the ratios, not the absolute figures. Writes bench/results/tokenizer_encode.json.

    python bench/tokenizer_encode.py            # stdlib .py files, ~30 MB
    python bench/tokenizer_encode.py --quick    # ~3 MB, results printed, not saved
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("bench.tokenizer_encode")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "tokenizer_encode.json"
MB = 1_000_000


def read_stdlib(cap_bytes: int) -> list[str]:
    """The standard library's .py files (sorted, up to ``cap_bytes``) as texts."""
    base = Path(sysconfig.get_paths()["stdlib"])
    texts, total = [], 0
    for path in sorted(p for p in base.rglob("*.py") if "site-packages" not in p.parts):
        data = path.read_bytes()
        if total + len(data) > cap_bytes:
            break
        total += len(data)
        texts.append(data.decode("utf-8", errors="replace"))
    return texts


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="~3 MB input, 1 repeat; results printed, not saved")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each contender (best is kept)")
    parser.add_argument("--vocab-size", type=int, default=8000, help="vocabulary of the trained tokenizer")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import tokenizers

    from lmforge.data.executor import ExecutorConfig
    from lmforge.tokenizer.export import export_hf_tokenizer
    from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
    from lmforge.tokenizer.shards import stream_token_shards
    from lmforge.tokenizer.train import TokenizerTrainArgs, train_tokenizer

    texts = read_stdlib(3 * MB if args.quick else 40 * MB)
    repeats = 1 if args.quick else args.repeats
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    logger.info("input: %d stdlib files, %.1f MB", len(texts), n_bytes / MB)

    work = Path(tempfile.mkdtemp(prefix="bench-tokenizer-"))
    model = train_tokenizer(texts, TokenizerTrainArgs(vocab_size=args.vocab_size))
    export_hf_tokenizer(model, work / "hf", chat_template="", model_max_length=1 << 30)
    ours = SentencePieceTokenizer.from_bytes(model)
    hf = tokenizers.Tokenizer.from_file(str(work / "hf" / "tokenizer.json"))

    # Same vocabulary, same ids: check on a sample before timing anything.
    sample = texts[:: max(1, len(texts) // 200)]
    mismatches = sum(ours.encode(t, parse_special=False) != hf.encode(t, add_special_tokens=False).ids for t in sample)
    logger.info("id parity on %d sample files: %d mismatches", len(sample), mismatches)

    contenders = {
        "ours_shards_1proc": lambda: stream_token_shards(work / "s1", {"train": texts}, ours, seq_len=2048),
        "ours_shards_2proc": lambda: stream_token_shards(work / "s2", {"train": texts}, ours, seq_len=2048,
                                                         executor=ExecutorConfig(kind="local", workers=2)),
        "hf_encode_loop_1thread": lambda: [hf.encode(t, add_special_tokens=False) for t in texts],
        "hf_encode_batch": lambda: hf.encode_batch(texts, add_special_tokens=False),
    }
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(repeats):
        for name, fn in contenders.items():
            seconds[name].append(timed(fn))
            logger.info("repeat %d %s: %.2f s (%.2f MB/s)", r, name, seconds[name][-1], n_bytes / MB / seconds[name][-1])
    mb_s = {name: round(n_bytes / MB / min(s), 3) for name, s in seconds.items()}
    ratios = {
        "ours_1proc_vs_hf_1thread": round(mb_s["ours_shards_1proc"] / mb_s["hf_encode_loop_1thread"], 3),
        "ours_2proc_vs_hf_encode_batch": round(mb_s["ours_shards_2proc"] / mb_s["hf_encode_batch"], 3),
        "ours_2proc_vs_ours_1proc": round(mb_s["ours_shards_2proc"] / mb_s["ours_shards_1proc"], 3),
    }
    doc = {"benchmark": "tokenizer_encode", "input": "stdlib .py files", "input_mb": round(n_bytes / MB, 2),
           "files": len(texts), "vocab_size": ours.vocab_size, "repeats": repeats,
           "python": platform.python_version(), "tokenizers": tokenizers.__version__, "cpus": os.cpu_count(),
           "id_parity_sample_files": len(sample), "id_parity_mismatches": mismatches,
           "mb_per_s": mb_s, "seconds": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
           "ratios": ratios, "target_ratio": 1.0}
    logger.info("MB/s %s; ratios %s", mb_s, ratios)
    if args.quick:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
