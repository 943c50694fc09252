"""Preference optimisation: the worker run on every rank of an align job (one on-policy round).

``python -m lmforge.training.align --config job.json`` (started by ``lmforge.training.launch``) loads the
policy (a Hugging Face directory: the SFT model, or the previous round's output), reads the tokenized pairs
(``lmforge.align.data``: chosen and rejected sequences, labels -100 on the prompt) and trains with the shared
DeepSpeed loop (``loop.train``: ZeRO stages, checkpoints, exact resume), so a killed round resumes like
pretraining and SFT do.

The reference model is never held beside the policy: before training, every rank scores its share of the
pairs with the loaded weights (the policy at step 0 *is* the reference; with LoRA, the model before the
adapters are added, i.e. the adapters disabled) and rank 0 writes the log-probabilities to
``<run_dir>/reference_logps.json``, keyed by the job's fingerprint. A rerun of the same job (a resume) reads
them back instead of recomputing; any change to the model, the pairs or the settings changes the fingerprint.

``PreferenceModel`` wraps the policy so the loop's ``engine(**batch)`` returns a loss: one forward over the
chosen and rejected rows of a micro-batch (stacked, right-padded), per-row sums of labelled log-probs
(``lmforge.align.losses.sequence_logps``) and ``preference_loss`` with the cached reference. Its per-step
metrics (rewards, margin, accuracy, log-ratio to the reference) go to MLflow next to the loss.

After the loop rank 0 scores the held-out pairs with the exported model and adds to ``result.json``: held-out
preference accuracy (the method's implicit reward prefers the chosen answer) before and after, and the share
of held-out pairs where the chosen answer has the higher mean log-prob (``logp_accuracy``), before and after.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmforge.processes import guard_process
from lmforge.training.config import load_job_spec

logger = logging.getLogger("lmforge.training")

REFERENCE_FILE = "reference_logps.json"
PAIR_FIELDS = ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")


def load_pair_examples(path: str) -> list[dict[str, Any]]:
    """Tokenized pairs of a JSONL file (``lmforge.align.data.tokenize_pairs``' examples)."""
    examples = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                    examples.append({"id": record.get("id", f"line {lineno}"), **{k: record[k] for k in PAIR_FIELDS}})
                except (json.JSONDecodeError, KeyError) as err:
                    raise ValueError(f"{path}:{lineno}: bad preference example ({err}); expected the keys "
                                     f"{', '.join(PAIR_FIELDS)}") from None
    return examples


def collate_pairs(examples: Sequence[dict[str, Any]], pad_id: int,
                  reference: Sequence[Sequence[float]] | None = None) -> dict[str, Any]:
    """B pairs as one batch of 2B rows (chosen rows first, then rejected), right-padded.

    ``ref_logps`` (shape [2B]) holds the cached reference log-probs in the same order when given.
    """
    import torch

    from lmforge.training.data import collate_examples

    rows = ([(ex["chosen_input_ids"], ex["chosen_labels"]) for ex in examples]
            + [(ex["rejected_input_ids"], ex["rejected_labels"]) for ex in examples])
    batch = collate_examples(rows, pad_id)
    if reference is not None:
        batch["ref_logps"] = torch.tensor([r[0] for r in reference] + [r[1] for r in reference], dtype=torch.float32)
    return batch


def _preference_model_class() -> type:
    import torch
    from transformers.utils import ModelOutput

    from lmforge.align.losses import preference_loss, sequence_logps

    class PreferenceModel(torch.nn.Module):
        """The policy, with ``forward`` returning the preference loss of a collated batch (``collate_pairs``)."""

        def __init__(self, policy: Any, loss_args: Any):
            super().__init__()
            self.policy = policy
            self.loss_args = loss_args

        @property
        def config(self) -> Any:  # the loop reads the model's config (use_cache, FLOPs per token)
            return self.policy.config

        def get_input_embeddings(self) -> Any:
            return self.policy.get_input_embeddings()

        def get_output_embeddings(self) -> Any:
            return self.policy.get_output_embeddings()

        def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
            self.policy.gradient_checkpointing_enable(**kwargs)

        def save_pretrained(self, out: str, state_dict: dict | None = None, **kwargs: Any) -> None:
            if state_dict is not None:  # ZeRO-3's consolidated state dict names the wrapper's attribute
                state_dict = {k.removeprefix("policy."): v for k, v in state_dict.items()}
            self.policy.save_pretrained(out, state_dict=state_dict, **kwargs)

        def forward(self, input_ids: Any, attention_mask: Any, labels: Any, ref_logps: Any) -> Any:
            logits = self.policy(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            logps, n_tokens = sequence_logps(logits, labels)  # (2B,), (2B,)
            b = input_ids.shape[0] // 2
            ref = ref_logps.to(logps.dtype)
            loss, metrics = preference_loss(self.loss_args, logps[:b], logps[b:], ref[:b], ref[b:],
                                            n_tokens[:b], n_tokens[b:])
            return ModelOutput(loss=loss, metrics={k: v.detach() for k, v in metrics.items()})

    return PreferenceModel


def sequence_scores(model: Any, examples: Sequence[dict[str, Any]], pad_id: int,
                    batch_size: int = 8) -> list[tuple[float, float, int, int]]:
    """(chosen sum log-prob, rejected sum log-prob, chosen tokens, rejected tokens) of each pair, no gradient."""
    import torch

    from lmforge.align.losses import sequence_logps

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[tuple[float, float, int, int]] = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            batch = collate_pairs(chunk, pad_id)
            logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                           use_cache=False).logits
            logps, n = sequence_logps(logits.float(), batch["labels"].to(device))
            b = len(chunk)
            out += [(float(logps[i]), float(logps[b + i]), int(n[i]), int(n[b + i])) for i in range(b)]
    model.train(was_training)
    return out


def reference_scores(model: Any, examples: Sequence[dict[str, Any]], pad_id: int, *, rank: int, world: int,
                     cache: Path, fingerprint: str | None) -> list[tuple[float, float, int, int]]:
    """The reference scores of ``examples``: read from ``cache`` when it holds this job's, else computed.

    Every rank scores the pairs ``i % world == rank``; the shares are gathered and rank 0 writes the cache
    atomically. Every rank returns the full list.
    """
    import torch.distributed as dist

    from lmforge.training.checkpoints import write_atomic

    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("fingerprint") == fingerprint and len(saved.get("scores", [])) == len(examples):
            return [tuple(s) for s in saved["scores"]]
    mine = list(range(rank, len(examples), world))
    scores = sequence_scores(model, [examples[i] for i in mine], pad_id)
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, list(zip(mine, scores, strict=True)))
    full: list[Any] = [None] * len(examples)
    for part in gathered:
        for i, s in part:
            full[i] = tuple(s)
    if rank == 0:
        write_atomic(cache, json.dumps({"fingerprint": fingerprint, "scores": full}))
    dist.barrier()
    return full


def heldout_metrics(scores: Sequence[tuple[float, float, int, int]], reference: Sequence[tuple[float, float, int, int]],
                    loss_args: Any) -> dict[str, float]:
    """Held-out preference accuracy (the method's implicit reward) and log-prob accuracy of scored pairs."""
    import torch

    from lmforge.align.losses import preference_loss

    if not scores:
        return {}
    t = torch.tensor(scores, dtype=torch.float64)
    r = torch.tensor(reference, dtype=torch.float64)
    _, metrics = preference_loss(loss_args, t[:, 0], t[:, 1], r[:, 0], r[:, 1], t[:, 2], t[:, 3])
    mean_c, mean_r = t[:, 0] / t[:, 2].clamp(min=1), t[:, 1] / t[:, 3].clamp(min=1)
    return {"preference_accuracy": float(metrics["accuracy"]), "margin": float(metrics["margin"]),
            "logp_accuracy": float((mean_c > mean_r).double().mean()), "pairs": len(scores)}


def main(argv: list[str] | None = None) -> None:
    guard_process()  # end with the launcher or the process that owns the job ($LMFORGE_OWNER), however they end
    spec = load_job_spec("lmforge align worker (started by the launcher on each rank)", argv)

    import torch
    from transformers import AutoModelForCausalLM

    from lmforge.training.data import sample_indices
    from lmforge.training.loop import finish_job, init_distributed, train
    from lmforge.training.sft import finish_lora_checkpoint

    rank, world = init_distributed()
    torch.manual_seed(spec.train.seed)
    data, loss_args = spec.data, spec.preference
    if not spec.init_from or not data.examples or data.pad_id is None or loss_args is None:
        raise ValueError("an align job needs init_from, data.examples, data.pad_id and preference")
    model = AutoModelForCausalLM.from_pretrained(
        spec.init_from, dtype=torch.float32, attn_implementation=spec.model.attn_implementation,
        trust_remote_code=spec.model.trust_remote_code)
    model.config.use_cache = False
    pairs = load_pair_examples(data.examples)
    if not pairs:
        raise ValueError(f"{data.examples}: no preference pairs to train on")
    heldout = load_pair_examples(data.validation_examples) if data.validation_examples else []
    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    model.to(device)
    # The reference: this model before any update (LoRA: before the adapters exist), scored once.
    reference = reference_scores(model, pairs + heldout, data.pad_id, rank=rank, world=world,
                                 cache=Path(spec.run_dir, REFERENCE_FILE), fingerprint=spec.fingerprint)
    ref_train, ref_heldout = reference[:len(pairs)], reference[len(pairs):]
    extra: dict[str, Any] = {"pairs": len(pairs), "heldout_pairs": len(heldout), "method": loss_args.method}
    if heldout:
        extra["heldout_initial"] = heldout_metrics(ref_heldout, ref_heldout, loss_args)
    lora = spec.model.lora is not None
    if lora:
        from lmforge.training.lora import apply_lora

        model = apply_lora(model, spec.model.lora)
    extra["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    wrapped = _preference_model_class()(model, loss_args)

    def next_batch(step: int, micro: int) -> dict:
        idx = [int(i) for i in sample_indices(step, micro, rank, world_size=world,
                                              micro_batch_size=spec.train.micro_batch_size,
                                              accumulation=spec.train.gradient_accumulation_steps,
                                              n_items=len(pairs), seed=spec.train.seed)]
        batch = collate_pairs([pairs[i] for i in idx], data.pad_id, [ref_train[i][:2] for i in idx])
        return {k: v.to(device) for k, v in batch.items()}

    train(spec, wrapped, next_batch, rank=rank, world_size=world, epoch_size=len(pairs))
    if rank == 0:
        if lora:
            finish_lora_checkpoint(spec.output_dir, spec.init_from)
        if heldout:
            del model, wrapped
            tuned = AutoModelForCausalLM.from_pretrained(spec.output_dir, dtype=torch.float32,
                                                         trust_remote_code=spec.model.trust_remote_code).to(device)
            extra["heldout"] = heldout_metrics(sequence_scores(tuned, heldout, data.pad_id), ref_heldout, loss_args)
        path = Path(spec.run_dir, "result.json")
        path.write_text(json.dumps({**json.loads(path.read_text()), **extra}, indent=2))
        logger.info("align: held-out preference accuracy %s -> %s",
                    extra.get("heldout_initial", {}).get("preference_accuracy"),
                    extra.get("heldout", {}).get("preference_accuracy"))
    finish_job(spec.run_dir, rank)


if __name__ == "__main__":
    main()
