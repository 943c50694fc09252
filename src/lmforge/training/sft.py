"""Supervised fine-tuning: the library side of the sft stage and the worker run on every rank.

``python -m lmforge.training.sft --config job.json`` (started by ``lmforge.training.launch``) loads
the base model (a Hugging Face directory: our pretrain checkpoint or any local HF model), reads the
tokenized examples (``input_ids`` + ``labels`` masked to assistant turns), packs them (``packing.py``)
unless ``sft.packing: false``, optionally wraps the model in LoRA adapters (``lora.py``) and runs the
shared DeepSpeed loop, so checkpoints and resume work as in pretraining.

After the loop rank 0 finishes the checkpoint (LoRA: adapter to ``<checkpoint>/adapter``, merged
weights beside it) and adds to ``result.json``: packing efficiency, real (non-padding) and trained
(labelled) tokens seen with their rates, the trained-token share, trainable parameters, and the
validation loss of the base and the fine-tuned model on the held-out examples.

The stage's options are ``lmforge.training.sft_config.SftConfig``; the functions here take it whole.

Base model and tokenizer (``resolve_sft_sources``):
- ``sft.base_model: null`` -> the pretrain stage's checkpoint; a path -> that local Hugging Face model
  directory (any causal LM transformers implements natively; one whose code ships in the directory
  is refused unless ``sft.trust_remote_code``: ``lmforge.model.base_model.check_base_model``).
- The tokenizer is the model directory's own when it has one (a foreign model, or a continued-
  pretraining checkpoint), else the tokenizer stage's; its chat template is the one template
  (``lmforge.tokenizer.chat_tokenizer.ChatTokenizer``), or, for a tokenizer without one, the built-in
  template ``sft.chat_template`` names. The model's embedding must cover the tokenizer's vocabulary.
- The fine-tuned checkpoint carries that tokenizer and template, and a ``generation_config.json``
  whose ``eos_token_id`` lists every stop id (end-of-turn first): evaluation, packaging and serving
  read them from the checkpoint.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.processes import guard_process
from lmforge.training.config import load_job_spec
from lmforge.training.lora import ADAPTER_SUBDIR

if TYPE_CHECKING:
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer
    from lmforge.training.sft_config import SftConfig

logger = logging.getLogger("lmforge.training")

# Held-out examples scored for the validation loss (before and after training).
MAX_VALIDATION_EXAMPLES = 256


def resolve_sft_sources(pretrain_checkpoint: str, tokenizer_dir: str, config: SftConfig) -> tuple[str, str]:
    """(base model directory, tokenizer directory) by the rule in the module docstring."""
    from lmforge.model.base_model import check_base_model
    from lmforge.tokenizer.chat_tokenizer import tokenizer_dir_for

    if config.base_model:
        check_base_model(config.base_model, trust_remote_code=config.trust_remote_code, where="sft.base_model")
    base = config.base_model or pretrain_checkpoint  # the checkpoint is checked when training starts (run_sft)
    return str(base), tokenizer_dir_for(base, tokenizer_dir)


def load_sft_tokenizer(pretrain_checkpoint: str, tokenizer_dir: str, config: SftConfig) -> ChatTokenizer:
    """The ``ChatTokenizer`` SFT renders and masks with (the rule of ``resolve_sft_sources``)."""
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer

    base, _ = resolve_sft_sources(pretrain_checkpoint, tokenizer_dir, config)
    return ChatTokenizer.for_model(base, tokenizer_dir, chat_template=config.chat_template,
                                   trust_remote_code=config.trust_remote_code)


def tokenize_sft_conversations(conversations: Sequence[Mapping[str, Any]], chat: ChatTokenizer,
                               config: SftConfig) -> tuple[list[dict], dict[str, Any]]:
    """Conversations as training examples: rendered with the chat template, masked, fitted to ``max_length``.

    Returns the examples and ``build_sft_examples``' stats.
    """
    from lmforge.training.sft_data import build_sft_examples

    return build_sft_examples(conversations, chat, max_length=config.max_length,
                              train_on_prompt=config.train_on_prompt)


def tokenize_held_out(conversations: Sequence[Mapping[str, Any]], chat: ChatTokenizer,
                      config: SftConfig) -> list[dict]:
    """The first ``MAX_VALIDATION_EXAMPLES`` held-out conversations as examples, masked like training."""
    return tokenize_sft_conversations(list(conversations)[:MAX_VALIDATION_EXAMPLES], chat, config)[0]


def finish_sft_checkpoint(checkpoint: str, chat: ChatTokenizer) -> None:
    """Save the tokenizer with its template into the checkpoint, and every stop id into its generation config.

    ``eos_token_id`` lists the end-of-turn id first, then the tokenizer's and the base model's EOS ids:
    what ``generate`` stops on wherever the checkpoint goes.
    """
    from transformers import GenerationConfig

    chat.save(checkpoint)
    path = Path(checkpoint, "generation_config.json")
    config = GenerationConfig.from_pretrained(checkpoint) if path.is_file() else GenerationConfig()
    config.eos_token_id = chat.stop_ids
    config.pad_token_id = chat.pad_id
    config.bos_token_id = chat.bos_id
    config.save_pretrained(checkpoint)


def write_examples(path: Path, examples: Sequence[Mapping[str, Any]]) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps({"id": ex.get("id"), "input_ids": ex["input_ids"], "labels": ex["labels"]}) + "\n")
    return str(path)


def load_examples(path: str, *, with_ids: bool = False) -> list:
    """(input_ids, labels) pairs of a JSONL file (with ``with_ids``: (id, input_ids, labels))."""
    examples = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                    pair = (record["input_ids"], record["labels"])
                except (json.JSONDecodeError, KeyError) as err:
                    raise ValueError(f"{path}:{lineno}: bad SFT example ({err})") from None
                examples.append((record.get("id", f"line {lineno}"), *pair) if with_ids else pair)
    if not examples:
        raise ValueError(f"{path}: no SFT examples")
    return examples


class SftBatches:
    """Training items (packed rows, or single examples) and their real and trained token counts."""

    def __init__(self, examples: Sequence[tuple[Any, list[int], list[int]]], *, pad_id: int, packing: bool,
                 seq_len: int, seed: int):
        from lmforge.training.packing import pack_examples, packing_stats

        self.pairs = [(ids, labels) for _, ids, labels in examples]
        self.pad_id, self.packing, self.seq_len = pad_id, packing, seq_len
        lengths = [len(ids) for ids, _ in self.pairs]
        if packing:
            self.rows = pack_examples(lengths, seq_len, seed=seed, ids=[name for name, _, _ in examples])
        else:
            self.rows = [[i] for i in range(len(self.pairs))]
        # The first token of an example is never a target (causal LM), packed or not.
        trained = [sum(1 for x in labels[1:] if x != -100) for _, labels in self.pairs]
        self.real_tokens = [sum(lengths[i] for i in row) for row in self.rows]
        self.trained_tokens = [sum(trained[i] for i in row) for row in self.rows]
        self.stats = {"examples": len(self.pairs), "trained_token_fraction": sum(trained) / max(1, sum(lengths))}
        if packing:
            self.stats.update(packing_stats(lengths, self.rows, seq_len))

    def __len__(self) -> int:
        return len(self.rows)

    def collate(self, indices: Sequence[int]) -> dict[str, Any]:
        from lmforge.training.data import collate_examples
        from lmforge.training.packing import collate_packed

        if self.packing:
            return collate_packed([[self.pairs[i] for i in self.rows[j]] for j in indices], self.seq_len, self.pad_id)
        return collate_examples([self.pairs[self.rows[j][0]] for j in indices], self.pad_id)


def count_seen_tokens(batches: SftBatches, train: Any, world_size: int) -> tuple[int, int]:
    """(real, trained) tokens in every batch of the run: the sampler is a pure function of the step."""
    from lmforge.training.data import sample_indices

    real = trained = 0
    for step in range(train.max_steps):
        for micro in range(train.gradient_accumulation_steps):
            for rank in range(world_size):
                for j in sample_indices(step, micro, rank, world_size=world_size,
                                        micro_batch_size=train.micro_batch_size,
                                        accumulation=train.gradient_accumulation_steps, n_items=len(batches),
                                        seed=train.seed):
                    real += batches.real_tokens[int(j)]
                    trained += batches.trained_tokens[int(j)]
    return real, trained


def validation_loss(model: Any, examples: Sequence[tuple[list[int], list[int]]], pad_id: int,
                    batch_size: int = 8) -> float | None:
    """Mean loss per labelled token over ``examples`` (each scored alone, padded batches)."""
    import torch

    from lmforge.training.data import collate_examples

    device = next(model.parameters()).device
    total = count = 0.0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate_examples(list(examples[start:start + batch_size]),
                                                                    pad_id).items()}
            n = int((batch["labels"][:, 1:] != -100).sum())
            if n:
                total += float(model(**batch, use_cache=False).loss) * n
                count += n
    return total / count if count else None


def packing_mismatch(model: Any, batches: SftBatches, *, tolerance: float = 1e-3) -> float | None:
    """Largest difference (nats) between a token's log-probability in a packed row and alone, or None when exact.

    Packing relies on transformers building a block-diagonal mask from the restarting position ids;
    an architecture with its own attention bias (BLOOM's ALiBi) attends across the examples of a row
    instead (measured: exact architectures differ by ~1e-6 nats, BLOOM by ~2e-2). Checked on the
    first row holding two or more examples, in eval mode (no dropout), with the weights as loaded:
    every rank computes the same and decides alike.
    """
    import torch

    from lmforge.training.packing import collate_packed

    row = next((r for r in batches.rows if len(r) > 1), None)
    if row is None:
        return None
    examples = [batches.pairs[i] for i in row]
    was_training = model.training
    model.eval()
    worst, at = 0.0, 0
    with torch.no_grad():
        packed = collate_packed([examples], batches.seq_len, batches.pad_id)
        packed_logp = torch.log_softmax(model(**packed).logits[0].float(), dim=-1)
        for ids, _ in examples:
            if len(ids) > 1:  # the log-probability of each next token, in the row and alone
                alone = torch.log_softmax(model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float(), -1)
                targets = torch.tensor(ids[1:]).unsqueeze(1)
                in_row = packed_logp[at: at + len(ids) - 1].gather(1, targets)
                worst = max(worst, float((in_row - alone[:-1].gather(1, targets)).abs().max()))
            at += len(ids)
    model.train(was_training)
    return worst if worst > tolerance else None


def finish_lora_checkpoint(output_dir: str, base_model_dir: str) -> None:
    """Move the saved adapter into ``<output_dir>/adapter`` and write the merged weights into ``output_dir``."""
    from lmforge.training.lora import merge_adapter

    out = Path(output_dir)
    adapter = out / ADAPTER_SUBDIR
    adapter.mkdir()
    for item in list(out.iterdir()):
        if item != adapter:
            shutil.move(str(item), adapter / item.name)
    merge_adapter(adapter, out, base_model_dir=base_model_dir)


def main(argv: list[str] | None = None) -> None:
    guard_process()  # end with the launcher or the process that owns the job ($LMFORGE_OWNER), however they end
    spec = load_job_spec("lmforge SFT worker (started by the launcher on each rank)", argv)

    import torch
    from transformers import AutoModelForCausalLM

    from lmforge.training.data import sample_indices
    from lmforge.training.loop import finish_job, init_distributed, train

    rank, world = init_distributed()
    torch.manual_seed(spec.train.seed)
    if not spec.init_from:
        raise ValueError("SFT needs init_from: a Hugging Face model directory")
    model = AutoModelForCausalLM.from_pretrained(
        spec.init_from, dtype=torch.float32, attn_implementation=spec.model.attn_implementation,
        trust_remote_code=spec.model.trust_remote_code)
    model.config.use_cache = False  # training: a KV cache would also disable packed-sequence masking
    data = spec.data
    if not data.examples or data.pad_id is None:
        raise ValueError("an SFT job needs data.examples and data.pad_id")
    pad_id = data.pad_id
    batches = SftBatches(load_examples(data.examples, with_ids=True), pad_id=pad_id, packing=data.packing,
                         seq_len=data.packing_length, seed=spec.train.seed)
    mismatch = packing_mismatch(model, batches) if batches.packing else None
    if mismatch is not None:  # e.g. BLOOM (ALiBi): a packed row would attend across its examples
        logger.warning("sft: packing is not exact for %s (a token's log-probability in a packed row differs from "
                       "its example's alone by %.2g nats): training unpacked (sft.packing: false skips this check)",
                       type(model).__name__, mismatch)
        batches = SftBatches(load_examples(data.examples, with_ids=True), pad_id=pad_id, packing=False,
                             seq_len=data.packing_length, seed=spec.train.seed)
    validation = ([(ids, labels) for _, ids, labels in load_examples(data.validation_examples, with_ids=True)]
                  if data.validation_examples else [])
    extra: dict[str, Any] = dict(batches.stats)
    if mismatch is not None:
        extra["packing_refused"] = f"{type(model).__name__}: packed log-probabilities differ by up to {mismatch:.2g} nats"
    if rank == 0 and validation:
        device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
        extra["validation_loss_initial"] = validation_loss(model.to(device), validation, pad_id)
        model.train()
    lora = spec.model.lora is not None
    if lora:
        from lmforge.training.lora import apply_lora

        model = apply_lora(model, spec.model.lora)
    extra["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def next_batch(step: int, micro: int) -> dict:
        idx = sample_indices(step, micro, rank, world_size=world, micro_batch_size=spec.train.micro_batch_size,
                             accumulation=spec.train.gradient_accumulation_steps, n_items=len(batches),
                             seed=spec.train.seed)
        return batches.collate([int(i) for i in idx])

    result = train(spec, model, next_batch, rank=rank, world_size=world, epoch_size=len(batches))
    if rank == 0:
        if lora:
            finish_lora_checkpoint(spec.output_dir, spec.init_from)
        real, trained = count_seen_tokens(batches, spec.train, world)
        seconds = max(result["train_time_s"], 1e-9)
        extra.update(finetuning="lora" if lora else "full", packing=batches.packing, real_tokens=real,
                     trained_tokens=trained, real_tokens_per_s=real / seconds, trained_tokens_per_s=trained / seconds)
        if validation:
            del model
            tuned = AutoModelForCausalLM.from_pretrained(spec.output_dir, dtype=torch.float32,
                                                         trust_remote_code=spec.model.trust_remote_code)
            if torch.cuda.is_available():
                tuned = tuned.to(f"cuda:{torch.cuda.current_device()}")
            extra["validation_loss"] = validation_loss(tuned, validation, pad_id)
            extra["validation_examples"] = len(validation)
        path = Path(spec.run_dir, "result.json")
        path.write_text(json.dumps({**json.loads(path.read_text()), **extra}, indent=2))
        logger.info("sft: packing efficiency %s, validation loss %s -> %s",
                    extra.get("packing_efficiency"), extra.get("validation_loss_initial"), extra.get("validation_loss"))
    finish_job(spec.run_dir, rank)


if __name__ == "__main__":
    main()
