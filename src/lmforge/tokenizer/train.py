"""Train a sentencepiece tokenizer for a mix of English, Chinese, Japanese and code.

Why these settings: sentencepiece's defaults (``nmt_nfkc`` normalisation, collapsing of repeated
spaces, a dummy ``▁`` prefix) destroy indentation, so this module fixes an "identity" setup under which
``decode(encode(x)) == x`` holds for code, with byte fallback so nothing is ever ``<unk>``.
Chinese and Japanese bring thousands of distinct characters, most of them rare: ``character_coverage``
0.9999 keeps the characters that make up 99.99% of the training text as pieces (about 4,000 Han and
kana on the default mix) and leaves the long tail to byte fallback (3 byte tokens per character);
digits are never merged (``split_digits``). The vocabulary size (12288) was chosen by measurement on
the default mix; see ``TokenizerTrainArgs.vocab_size``. Lines longer than ``max_sentence_length``
(16 KB) are not learned from (see below): readers should keep paragraphs on their own lines.

sentencepiece learns per *line*: we feed the lines of each text (empty lines skipped), so no learned
piece ever contains a newline and ``"\\n"`` is always encoded as the byte token ``<0x0A>``. The chat
tokenizer and the Hugging Face export both rely on that fact.

Training is deterministic: same texts and same config give a byte-identical model. When the corpus
has more lines than ``input_sentence_size``, lines are sampled here with a seeded reservoir sampler:
sentencepiece's own sampler is not reproducible across processes (measured with 0.2.x).

Bad input (never a hang; each case is counted in the ``report`` dict or raises a ValueError that says
what to change):

- empty corpus (no non-empty line left): ValueError naming the skipped-line counts;
- ``vocab_size`` larger than the corpus supports (e.g. a corpus of one repeated character): ValueError
  giving the largest size sentencepiece can build from this corpus;
- NUL characters: sentencepiece silently ignores them in training, so they are stripped from training
  lines here and counted (``nul_chars_removed``); at encode time a NUL is the byte token ``<0x00>``
  and round-trips;
- lines longer than ``max_sentence_length`` bytes (minified files, a 1 GB line): skipped and counted
  (``lines_skipped_too_long``) without ever copying them: the scan finds newlines by index.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

logger = logging.getLogger(__name__)

__all__ = ["SentencePieceTokenizer", "TokenizerTrainArgs", "train_tokenizer"]

_MODEL_TYPES = ("bpe", "unigram")
# sentencepiece: "Vocabulary size too high (5000). Please set it to a value <= 295."
_VOCAB_TOO_HIGH = re.compile(r"Please set it to a value <= (\d+)")
# sentencepiece: "Vocabulary size is smaller than required_chars. 270 vs 285."
_VOCAB_TOO_LOW = re.compile(r"smaller than required_chars\. (\d+) vs (\d+)")


@dataclass
class TokenizerTrainArgs:
    """Everything that decides the learned vocabulary (a tokenizer is a pure function of data + this).

    ``tokenizer.train`` of the stage config (`lmforge.tokenizer.config.TokenizerConfig`); invalid
    settings raise ValueError when the object is built.
    """

    # "bpe" (default; exported to Hugging Face as an exact BPE) or "unigram".
    model_type: str = "bpe"
    # Total vocabulary size, including special tokens, user-defined symbols and the 256 byte tokens.
    # 12288, measured on held-out documents of a 60 MB sample of the default en/zh/ja/code mix (issue 15,
    # bench/tokenizer_vocab.py): en 3.53, zh 5.10, ja 5.96, code 2.76 bytes/token; the smallest size with
    # en >= 3.5 (8192: 3.26) and the stdlib no worse than today's code-only 4096 tokenizer (3.16 vs 3.10;
    # 8192: 2.98). 16384 compresses 4-5% better for a third more embedding: on the tiny preset 12288 gives
    # 6.3 M embedding parameters beside 3.1 M in the layers (16384: 8.4 M).
    vocab_size: int = 12288
    # Share of training characters the vocabulary must cover; the rarest rest is byte fallback. 0.9999 on
    # the default mix: byte fallback 0.3-0.4% of zh/ja tokens (0.9995: 0.9-1.6%; 1.0 spends pieces on
    # one-off characters and compresses 4-6% worse).
    character_coverage: float = 0.9999
    # Encode characters outside the vocabulary as UTF-8 byte tokens <0x..> instead of <unk>.
    byte_fallback: bool = True
    # Never merge digits: numbers are spelled digit by digit (better arithmetic, stable vocab).
    split_digits: bool = True
    # Maximum number of lines used for training (a seeded uniform sample when the corpus has more).
    input_sentence_size: int = 2_000_000
    # Threads used by the sentencepiece trainer.
    num_threads: int = 2
    # Seed of the line sampling (and of sentencepiece's generator): same data + config -> same bytes.
    seed: int = 42
    # Longest line (in bytes) used for training; longer lines are skipped.
    max_sentence_length: int = 16384
    # Longest learned piece, in characters.
    max_sentencepiece_length: int = 16
    # Unknown token piece and id (only produced when byte_fallback is off).
    unk_piece: str = "<unk>"
    unk_id: int = 0
    # Beginning-of-sequence token: prepended by the chat template, not by encode().
    bos_piece: str = "<s>"
    bos_id: int = 1
    # End-of-sequence token: appended after every pretraining document.
    eos_piece: str = "</s>"
    eos_id: int = 2
    # Padding token (-1 as id: none).
    pad_piece: str = "<pad>"
    pad_id: int = 3
    # Atomic symbols, never split or merged (chat-role markers); they get ids right after the specials.
    user_defined_symbols: list[str] = field(default_factory=lambda: ["<|im_start|>", "<|im_end|>"])
    # Normalisation rule; "identity" keeps code byte-exact (the default nmt_nfkc rewrites characters).
    normalization_rule_name: str = "identity"
    # sentencepiece's default True collapses runs of spaces, i.e. destroys indentation.
    remove_extra_whitespaces: bool = False
    # sentencepiece's default True prepends "▁" to every input, which breaks round trips of code.
    add_dummy_prefix: bool = False
    # Allow pieces made only of whitespace ("▁▁▁▁"), i.e. indentation becomes a few tokens.
    allow_whitespace_only_pieces: bool = True

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenizerTrainArgs:
        """Build the arguments from a plain dict (e.g. Kedro ``params:``), rejecting unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown {cls.__name__} key(s) {unknown}; valid keys are {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a plain dict (for logging as flat params)."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise ValueError on settings that cannot produce a working tokenizer."""
        if self.model_type not in _MODEL_TYPES:
            raise ValueError(f"model_type must be one of {_MODEL_TYPES}, got {self.model_type!r}")
        ids = [i for i in (self.unk_id, self.bos_id, self.eos_id, self.pad_id) if i >= 0]
        if self.unk_id < 0 or len(set(ids)) != len(ids):
            raise ValueError(f"unk id must be >= 0 and unk/bos/eos/pad ids distinct (-1 = none), got {ids}")
        if self.input_sentence_size < 1:
            raise ValueError(f"input_sentence_size must be positive, got {self.input_sentence_size}")
        if self.byte_fallback and self.vocab_size < 4 + len(self.user_defined_symbols) + 256 + 1:
            raise ValueError(f"vocab_size {self.vocab_size} leaves no room beside 256 byte tokens and specials")


def iterate_training_lines(
    texts: Iterable[str], *, max_bytes: int | None = None, counts: dict[str, int] | None = None
) -> Iterator[str]:
    """Yield the non-empty lines of every text (sentencepiece learns per line).

    With ``max_bytes``, lines longer than that many UTF-8 bytes are skipped without being copied
    (a line is only sliced once its length is known to fit) and NUL characters are removed. ``counts``,
    when given, receives ``texts``, ``lines``, ``lines_skipped_too_long`` and ``nul_chars_removed``.
    """
    counts = counts if counts is not None else {}
    for key in ("texts", "lines", "lines_skipped_too_long", "nul_chars_removed"):
        counts.setdefault(key, 0)
    for text in texts:
        counts["texts"] += 1
        start, end_of_text = 0, len(text)
        while start < end_of_text:
            end = text.find("\n", start)
            if end < 0:
                end = end_of_text
            # A character is 1-4 UTF-8 bytes: only lines of max_bytes/4..max_bytes chars need encoding.
            if max_bytes is not None and end - start > max_bytes:
                counts["lines_skipped_too_long"] += 1
            elif end > start:
                line = text[start:end]
                if max_bytes is not None:
                    if "\x00" in line:
                        n_before = len(line)
                        line = line.replace("\x00", "")
                        counts["nul_chars_removed"] += n_before - len(line)
                    if len(line) * 4 > max_bytes and len(line.encode("utf-8")) > max_bytes:
                        counts["lines_skipped_too_long"] += 1
                        line = ""
                if line:
                    counts["lines"] += 1
                    yield line
            start = end + 1


def build_trainer_kwargs(config: TokenizerTrainArgs) -> dict[str, Any]:
    """Translate the config into sentencepiece trainer keyword arguments."""
    return {
        "model_type": config.model_type,
        "vocab_size": config.vocab_size,
        "character_coverage": config.character_coverage,
        "byte_fallback": config.byte_fallback,
        "split_digits": config.split_digits,
        "input_sentence_size": 0,  # train_tokenizer samples lines itself (reproducibly)
        "shuffle_input_sentence": False,
        "num_threads": config.num_threads,
        "max_sentence_length": config.max_sentence_length,
        "max_sentencepiece_length": config.max_sentencepiece_length,
        "unk_piece": config.unk_piece,
        "unk_id": config.unk_id,
        "bos_piece": config.bos_piece,
        "bos_id": config.bos_id,
        "eos_piece": config.eos_piece,
        "eos_id": config.eos_id,
        "pad_piece": config.pad_piece,
        "pad_id": config.pad_id,
        "user_defined_symbols": list(config.user_defined_symbols),
        "normalization_rule_name": config.normalization_rule_name,
        "remove_extra_whitespaces": config.remove_extra_whitespaces,
        "add_dummy_prefix": config.add_dummy_prefix,
        "allow_whitespace_only_pieces": config.allow_whitespace_only_pieces,
        "minloglevel": 2,  # sentencepiece logs a lot to stderr; we log a summary ourselves
    }


def sample_lines(lines: Iterable[str], k: int, seed: int) -> tuple[list[str], int]:
    """Uniform reservoir sample of ``k`` lines (all lines, in order, when there are at most ``k``).

    Done here rather than by sentencepiece: its own sampler (``shuffle_input_sentence``) is not
    reproducible across processes even with ``set_random_generator_seed`` (measured, 0.2.x).
    Returns the sample and the number of lines seen.
    """
    rng = random.Random(seed)
    sample: list[str] = []
    n = 0
    for n, line in enumerate(lines, start=1):
        if len(sample) < k:
            sample.append(line)
        else:
            j = rng.randrange(n)
            if j < k:
                sample[j] = line
    return sample, n


def train_tokenizer(
    texts: Iterable[str], config: TokenizerTrainArgs, *, report: dict[str, int] | None = None
) -> bytes:
    """Train a sentencepiece model on the lines of ``texts`` and return the serialized model proto.

    ``report``, when given, is filled with the line counts (texts, lines used, lines sampled, lines
    skipped as too long, NUL characters removed) so the caller can log or check them.
    """
    import sentencepiece as spm

    config.validate()
    counts: dict[str, int] = {} if report is None else report
    lines = iterate_training_lines(texts, max_bytes=config.max_sentence_length, counts=counts)
    sample, n_lines = sample_lines(lines, config.input_sentence_size, config.seed)
    counts["lines_sampled"] = len(sample)
    if counts["lines_skipped_too_long"] or counts["nul_chars_removed"]:
        logger.warning(
            "Tokenizer training input: %d lines longer than max_sentence_length=%d bytes skipped, "
            "%d NUL characters removed", counts["lines_skipped_too_long"], config.max_sentence_length,
            counts["nul_chars_removed"],
        )
    if not sample:
        raise ValueError(
            f"Cannot train a tokenizer on an empty corpus: no non-empty lines in {counts['texts']} texts "
            f"({counts['lines_skipped_too_long']} lines skipped as longer than max_sentence_length="
            f"{config.max_sentence_length} bytes, {counts['nul_chars_removed']} NUL characters removed). "
            "Check the training documents, or raise tokenizer.train.max_sentence_length"
        )

    spm.set_random_generator_seed(config.seed)  # any other randomness inside sentencepiece
    writer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sample), model_writer=writer, **build_trainer_kwargs(config)
        )
    except RuntimeError as err:
        too_high = _VOCAB_TOO_HIGH.search(str(err))
        if too_high:
            raise ValueError(
                f"vocab_size {config.vocab_size} is larger than this corpus supports ({len(sample)} lines "
                f"give at most {too_high.group(1)} pieces): lower tokenizer.train.vocab_size to "
                f"<= {too_high.group(1)} or train on more (more varied) text"
            ) from err
        too_low = _VOCAB_TOO_LOW.search(str(err))
        if too_low:
            raise ValueError(
                f"vocab_size {config.vocab_size} is smaller than the {too_low.group(2)} characters and special "
                f"pieces this corpus needs at character_coverage={config.character_coverage}: raise "
                f"tokenizer.train.vocab_size to >= {too_low.group(2)} or lower tokenizer.train.character_coverage"
            ) from err
        raise ValueError(f"sentencepiece training failed ({err}); config: {config.to_dict()}") from err
    model = writer.getvalue()
    logger.info(
        "Trained %s tokenizer: vocab %d on %d of %d lines (%d chars), model %d bytes",
        config.model_type, config.vocab_size, len(sample), n_lines, sum(map(len, sample)), len(model),
    )
    return model
