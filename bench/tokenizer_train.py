"""Benchmark: sentencepiece tokenizer training time and peak memory, vocab 8k/32k on ~30 MB and ~300 MB.

Corpora (both real code, both offline): the interpreter's standard library (~30 MB of .py) and the
site-packages of the project's virtual environment (.py files, capped at 300 MB). Each configuration
trains in a fresh subprocess (``lmforge.tokenizer.train.train_tokenizer`` with the project's settings,
files streamed lazily so the corpus is never held whole in memory); the child reports its wall time
and its peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``).

    python bench/tokenizer_train.py            # full run -> bench/results/tokenizer_train.json
    python bench/tokenizer_train.py --quick    # ~3 MB, vocab 2k, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger("bench.tokenizer_train")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "tokenizer_train.json"
MB = 1_000_000


def corpus_files(name: str) -> list[Path]:
    """The .py files of a named corpus, in a fixed order."""
    if name == "stdlib":
        base = Path(sysconfig.get_paths()["stdlib"])
        return sorted(p for p in base.rglob("*.py") if "site-packages" not in p.parts)
    if name == "site-packages":
        return sorted(ROOT.joinpath(".venv").glob("lib/python*/site-packages/**/*.py"))
    raise ValueError(f"unknown corpus {name!r}")


def iter_corpus(name: str, cap_bytes: int) -> Iterator[str]:
    """Stream the corpus' texts until ``cap_bytes`` bytes were read."""
    total = 0
    for path in corpus_files(name):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if total + len(data) > cap_bytes:
            return
        total += len(data)
        yield data.decode("utf-8", errors="replace")


def run_child(corpus: str, cap_bytes: int, vocab_size: int) -> dict:
    """Train once (in this process) and return the measurements."""
    from lmforge.tokenizer.train import TokenizerTrainArgs, train_tokenizer

    n_bytes = sum(len(t.encode("utf-8")) for t in iter_corpus(corpus, cap_bytes))
    report: dict[str, int] = {}
    started = time.perf_counter()
    model = train_tokenizer(iter_corpus(corpus, cap_bytes), TokenizerTrainArgs(vocab_size=vocab_size), report=report)
    seconds = time.perf_counter() - started
    return {"corpus": corpus, "corpus_mb": round(n_bytes / MB, 1), "vocab_size": vocab_size,
            "train_seconds": round(seconds, 1), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "model_bytes": len(model), **report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small run (~3 MB stdlib, vocab 2k); results not saved")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON results")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per configuration")
    parser.add_argument("--child", nargs=3, metavar=("CORPUS", "CAP_BYTES", "VOCAB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.child:
        corpus, cap, vocab = args.child
        sys.stdout.write(json.dumps(run_child(corpus, int(cap), int(vocab))) + "\n")
        return

    if args.quick:
        configs = [("stdlib", 3 * MB, 2000)]
    else:
        configs = [("stdlib", 40 * MB, 8000), ("stdlib", 40 * MB, 32000),
                   ("site-packages", 300 * MB, 8000), ("site-packages", 300 * MB, 32000)]
    runs = []
    for corpus, cap, vocab in configs:
        logger.info("training vocab %d on %s (cap %d MB)", vocab, corpus, cap // MB)
        try:
            out = subprocess.run([sys.executable, __file__, "--child", corpus, str(cap), str(vocab)],
                                 capture_output=True, text=True, timeout=args.timeout, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
        except subprocess.TimeoutExpired:
            result = {"corpus": corpus, "vocab_size": vocab, "error": f"timed out after {args.timeout} s"}
        except subprocess.CalledProcessError as err:
            result = {"corpus": corpus, "vocab_size": vocab, "error": err.stderr[-500:]}
        logger.info("%s", result)
        runs.append(result)
    doc = {"benchmark": "tokenizer_train", "python": platform.python_version(), "machine": platform.machine(),
           "cpus": __import__("os").cpu_count(), "settings": "TokenizerTrainArgs defaults (bpe, byte fallback, "
           "input_sentence_size=2_000_000 lines sampled, num_threads=2)", "runs": runs}
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        logger.info("wrote %s", args.out)
    else:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
