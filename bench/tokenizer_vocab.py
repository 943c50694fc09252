"""Benchmark: the tokenizer's vocabulary size and character coverage for the en/zh/ja/code mix, measured.

Trains ``lmforge.tokenizer.train.train_tokenizer`` (the project's settings) on the TRAIN split of a
document corpus for each vocabulary size x character coverage, and measures it per language group
(`lmforge.tokenizer.metrics.measure_by_language`: bytes per token, byte fallback without the newline
byte, unknown tokens) and per source on the held-out documents (split by document id as the tokenizer
stage splits: `lmforge.data.splits.assign_split`). Beside them, today's code-only tokenizer: vocab
4096, coverage 1.0, trained on the interpreter's standard library (minus the held-out files), measured
on the same held-out documents.

The corpus is JSON lines of documents ``{"id", "text", "source", "metadata": {"language_group", ...}}``,
e.g. the data stage's cleaned shards (``data/03_primary/documents/*.jsonl``) or a sample of the fetched
sources. The issue-15 measurement (bench/README.md) used a 60 MB sample shaped like the default mix.

    python bench/tokenizer_vocab.py DOCS.jsonl [DOCS2.jsonl ...]    # -> bench/results/tokenizer_vocab.json
    python bench/tokenizer_vocab.py DOCS.jsonl --quick               # vocab 4096 only; nothing saved
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import sys
import sysconfig
import time
from pathlib import Path

logger = logging.getLogger("bench.tokenizer_vocab")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "tokenizer_vocab.json"
STDLIB_EXCLUDE = ("site-packages", "test", "tests", "idle_test", "__pycache__")


def load_documents(paths: list[Path]) -> list[dict]:
    docs = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            docs.extend(json.loads(line) for line in fh if line.strip())
    return docs


def measure(tok, held_out: list[dict]) -> dict:
    """Per language group and per source figures of ``tok`` on the held-out documents."""
    from lmforge.tokenizer.metrics import document_labels, measure_by_language

    texts = [d["text"] for d in held_out]
    labels = [document_labels(d) for d in held_out]
    keep = ("documents", "bytes", "tokens", "bytes_per_token", "byte_fallback_rate", "newline_tokens",
            "unknown_tokens")

    def rounded(figures: dict) -> dict:
        return {k: round(v, 5) if isinstance(v, float) else v for k, v in figures.items() if k in keep}

    return {"by_language": {g: rounded(f) for g, f in measure_by_language(texts, [x["language"] for x in labels],
                                                                            tok).items()},
            "by_source": {s: rounded(f) for s, f in measure_by_language(texts, [x["source"] for x in labels],
                                                                          tok).items()}}


def train_and_measure(texts, args, held_out: list[dict], name: str) -> dict:
    from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
    from lmforge.tokenizer.train import train_tokenizer

    report: dict[str, int] = {}
    started = time.perf_counter()
    model = train_tokenizer(texts, args, report=report)
    seconds = time.perf_counter() - started
    result = {"name": name, "vocab_size": args.vocab_size, "character_coverage": args.character_coverage,
              "train_seconds": round(seconds, 1), "train_lines": report.get("lines_sampled"),
              **measure(SentencePieceTokenizer.from_bytes(model), held_out)}
    logger.info("%s: %s", name, {g: f["bytes_per_token"] for g, f in result["by_language"].items()})
    return result


def stdlib_texts(skip_sha256: set[str]) -> list[str]:
    """The standard library's .py files (as the data stage's default reads them), minus the held-out ones."""
    base = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for path in sorted(base.rglob("*.py")):
        if any(part in STDLIB_EXCLUDE for part in path.relative_to(base).parts):
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        if hashlib.sha256(text.encode()).hexdigest() not in skip_sha256:
            texts.append(text)
    return texts


def main() -> None:
    from lmforge.data.splits import assign_split
    from lmforge.tokenizer.train import TokenizerTrainArgs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("documents", nargs="+", type=Path, help="JSON-lines document files")
    parser.add_argument("--vocab-sizes", default="4096,8192,12288,16384")
    parser.add_argument("--coverages", default="0.9995,0.9999,1.0", help="character_coverage values swept at 8192; "
                        "every vocabulary size also runs at the default coverage")
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--quick", action="store_true", help="vocab 4096 at the default coverage; nothing saved")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    docs = load_documents(args.documents)
    split = {"train": [], "validation": []}
    for doc in docs:
        split[assign_split(doc["id"], args.validation_fraction, 0)].append(doc)
    train_texts = [d["text"] for d in split["train"]]
    default = TokenizerTrainArgs()
    configs = [(4096, default.character_coverage)] if args.quick else (
        [(int(v), default.character_coverage) for v in args.vocab_sizes.split(",")]
        + [(8192, float(c)) for c in args.coverages.split(",") if float(c) != default.character_coverage])
    runs = [train_and_measure(train_texts, TokenizerTrainArgs(vocab_size=v, character_coverage=c), split["validation"],
                              f"mix-{v}-coverage-{c}") for v, c in configs]
    held_out_sha = {hashlib.sha256(d["text"].encode()).hexdigest() for d in split["validation"]}
    runs.append(train_and_measure(stdlib_texts(held_out_sha), TokenizerTrainArgs(vocab_size=4096, character_coverage=1.0),
                                  split["validation"], "today-code-only-stdlib-4096"))
    doc = {"benchmark": "tokenizer_vocab", "python": platform.python_version(), "machine": platform.machine(),
           "documents": {"train": len(split["train"]), "validation": len(split["validation"])},
           "corpus_mb": round(sum(len(d["text"].encode()) for d in docs) / 1e6, 1),
           "note": "byte_fallback_rate leaves out the newline byte <0x0A> (by design; see lmforge.tokenizer.metrics)",
           "runs": runs}
    if args.quick:
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
