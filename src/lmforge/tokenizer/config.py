"""The tokenizer stage's one typed config (``parameters_tokenizer.yml``, key ``tokenizer``).

Built once per Kedro node with ``build_dataclass(TokenizerConfig, params, path="tokenizer")`` and
passed down whole. Every default lives here; a test checks that the YAML shows the same values,
so the chat template exists once as a default (``DEFAULT_CHAT_TEMPLATE``) and once as the value
the chain runs with, proven equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge.data.executor import ExecutorConfig
from lmforge.tokenizer.chat_template import DEFAULT_CHAT_TEMPLATE
from lmforge.tokenizer.train import TokenizerTrainArgs


@dataclass
class TokenShardArgs:
    """How documents are split and packed into token shards (``tokenizer.shards``)."""

    seq_len: int = 256
    """Tokens per packed training sequence (block); the tail that does not fill a block is dropped."""
    validation_fraction: float = 0.05
    """Share of DOCUMENTS held out for validation (split by a hash of the document id, never by sequence).
    The same split decides the tokenizer's training texts and its parity/metric texts."""
    split_seed: int = 0
    """Seed of the split hash (`lmforge.data.splits.assign_split`)."""
    blocks_per_shard: int = 4096
    """Blocks per ``.npy`` shard file."""

    def __post_init__(self) -> None:
        if self.seq_len < 1 or self.blocks_per_shard < 1:
            raise ValueError(f"tokenizer.shards: seq_len and blocks_per_shard must be >= 1, got "
                             f"{self.seq_len}, {self.blocks_per_shard}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"tokenizer.shards.validation_fraction must be in [0, 1), got {self.validation_fraction}")


@dataclass
class TokenizerConfig:
    """Everything the tokenizer stage is configured by."""

    train: TokenizerTrainArgs = field(default_factory=TokenizerTrainArgs)
    """sentencepiece training settings: they decide the learned vocabulary."""
    chat_template: str = DEFAULT_CHAT_TEMPLATE
    """The ONE chat format (Jinja), written into the exported tokenizer_config.json; SFT rendering,
    evaluation prompts and the packaged model all read it from there."""
    model_max_length: int = 512
    """``model_max_length`` of the exported Hugging Face tokenizer."""
    require_hf_parity: bool = True
    """Fail the stage if the HF export encodes any validation document differently from sentencepiece
    (set false to accept a mismatch, e.g. for unigram models)."""
    shards: TokenShardArgs = field(default_factory=TokenShardArgs)
    """Document split and packing into token shards."""
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    """Where the shards' batches are encoded (``${globals:executor}``: the data stage's executor, one block for both);
    each worker loads the tokenizer once. The shards are byte-identical for every executor."""
