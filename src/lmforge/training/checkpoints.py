"""Periodic checkpoints a reader can trust, and the decision whether a rerun resumes from one.

DeepSpeed's ``engine.save_checkpoint`` writes ``<run_dir>/checkpoints/<tag>/`` from every rank, but a
process killed mid-save leaves a directory that looks like a checkpoint. So a checkpoint counts only
once *our* manifest exists: rank 0 writes ``<tag>/lmforge_manifest.json`` (step, job fingerprint,
world size, size and SHA-256 of every file) after all ranks finished saving, then points
``checkpoints/latest`` at it with ``os.replace``. Both writes are atomic, so ``latest`` never names a
partial checkpoint.

Resume (``find_resume_checkpoint``) walks the tags newest first and takes the first whose manifest
exists, whose files still match it (a truncated or corrupted checkpoint is skipped with a warning
naming it), and whose fingerprint equals the current job's. The fingerprint (``fingerprint_job``)
hashes what determines the weights: model, train and DeepSpeed settings, the tokenizer hash and the
*content* of the data (token shards, SFT examples, the base model), never paths. ``run_dir`` is not a
DVC output and survives ``dvc repro``: a changed tokenizer, data or parameter must never resume a
stale checkpoint, so such checkpoints are deleted and the job starts fresh. A run that finishes
deletes its checkpoints after the export, so the next run of the stage retrains.

A checkpoint is resumable by a different number of processes: the fingerprint leaves out how the
global batch is split (micro batch, gradient accumulation, world size), the manifest records the
global batch, and the data order is a function of samples consumed (``data.py``). ``rebatch`` keeps
the checkpoint's global batch by recomputing gradient accumulation for the new world size (the
micro batch is what fits in one device's memory, so it stays), and refuses with what to set where
that is impossible. ZeRO 1-3 optimizer partitions are per process: the loop converts such a
checkpoint to DeepSpeed's universal format first (``convert_to_universal``) and loads that.

Layout: checkpoints/{step_00000040/[universal/], step_00000080/, latest, run_state.json (restart count)}.
Assumes the checkpoint directory is visible to rank 0 from every node (a shared filesystem).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lmforge.atomic import replace_file
from lmforge.config import config_to_dict

logger = logging.getLogger("lmforge.training")

MANIFEST = "lmforge_manifest.json"
LATEST = "latest"
RUN_STATE = "run_state.json"
TAG_PREFIX = "step_"
# Files up to this size are hashed whole when fingerprinting data; larger ones by size + head + tail.
FULL_HASH_LIMIT = 64 << 20
UNIVERSAL = "universal"  # <tag>/universal: the checkpoint converted for another world size
# TrainArgs fields that do not change the trained weights (so changing them still resumes). How the
# global batch is split (micro batch x accumulation x processes) is left out too: the manifest keeps
# the global batch and ``rebatch`` keeps it on resume.
# ``fault_injection`` (test hooks: a killed run is resumed by the same job without its kill) and
# ``bandwidth_probe`` (a measurement at start, no effect on the weights) too.
NON_SEMANTIC_TRAIN_FIELDS = ("log_every", "checkpoint_every", "keep_checkpoints", "checkpoint_verify",
                             "micro_batch_size", "gradient_accumulation_steps", "fault_injection", "bandwidth_probe")
# JobData fields naming files or folders: fingerprinted by their content, never by their path.
DATA_FILE_FIELDS = ("token_shards", "examples", "validation_examples")
# DeepSpeed keys that only restate that split.
BATCH_SPLIT_DEEPSPEED_KEYS = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size")


def tag_for_step(step: int) -> str:
    return f"{TAG_PREFIX}{step:08d}"


def step_of_tag(tag: str) -> int | None:
    return int(tag[len(TAG_PREFIX):]) if tag.startswith(TAG_PREFIX) and tag[len(TAG_PREFIX):].isdigit() else None


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a reader sees the old file or the new one, never a partial one, and flush it
    to the disk first (``lmforge.atomic.replace_file``): a manifest must not name files a power cut lost."""
    replace_file(path, lambda fh: fh.write(text), fsync=True, encoding="utf-8")


DISK_FULL_NEXT_STEP = ("point the stage's run_dir at a larger disk, or keep fewer checkpoints (train.keep_checkpoints) "
                       "or save less often (train.checkpoint_every); then rerun: it resumes from the kept checkpoint")


@contextmanager
def saving(ckpt_root: Path, tag: str) -> Iterator[Path]:
    """The block that writes checkpoint ``tag`` (every rank's files, then rank 0's manifest).

    A full disk mid-save (``errors.is_disk_full``: ``ENOSPC``, or torch's errno-less ``RuntimeError``
    with the disk full) removes the partial ``<tag>`` directory, which resume would skip anyway (no
    manifest) but which holds the space the next try needs, and raises one line naming the checkpoint,
    the free space, the newest complete checkpoint kept for resume and what to set. Other errors pass.
    """
    from lmforge.errors import disk_full_error, is_disk_full

    tag_dir = ckpt_root / tag
    try:
        yield tag_dir
    except Exception as err:
        if not is_disk_full(err, tag_dir):
            raise
        error = disk_full_error(tag_dir, "checkpoint", DISK_FULL_NEXT_STEP)  # the free space before the cleanup
        shutil.rmtree(tag_dir, ignore_errors=True)
        kept = next((t for t in list_tags(ckpt_root) if t != tag and (ckpt_root / t / MANIFEST).is_file()), None)
        logger.error("checkpoint %s: disk full (%s: %s); the partial checkpoint was removed, %s", tag_dir,
                     type(err).__name__, str(err).strip()[:200],
                     f"resume will use {ckpt_root / kept}" if kept else "no earlier checkpoint to resume from")
        raise error from err


def sha256_file(path: Path, *, sample: bool = False) -> str:
    """SHA-256 of a file; with ``sample`` and a large file, of its size, first and last MiB only."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if sample and size > FULL_HASH_LIMIT:
            h.update(str(size).encode())
            h.update(fh.read(1 << 20))
            fh.seek(size - (1 << 20))
            h.update(fh.read())
        else:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def hash_content(path: str | Path) -> str:
    """Content hash of a file or a directory tree (relative names + file hashes; paths do not count)."""
    root = Path(path)
    if root.is_file():
        return sha256_file(root, sample=True)
    if not root.is_dir():
        raise FileNotFoundError(f"cannot fingerprint {root}: no such file or directory")
    h = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(file.relative_to(root).as_posix().encode() + b"\0")
        h.update(sha256_file(file, sample=True).encode())
    return h.hexdigest()


def fingerprint_job(spec: Any) -> str:
    """Hash of everything in a ``JobSpec`` that determines the trained weights (not its paths)."""
    train = {k: v for k, v in config_to_dict(spec.train).items() if k not in NON_SEMANTIC_TRAIN_FIELDS}
    data = {k: (hash_content(v) if k in DATA_FILE_FIELDS and v else v)
            for k, v in sorted(config_to_dict(spec.data).items())}
    payload = {
        "kind": spec.kind,
        "model": config_to_dict(spec.model),
        "init_from": hash_content(spec.init_from) if spec.init_from else None,
        "data": data,
        "train": train,
        "deepspeed": {k: v for k, v in spec.deepspeed.items() if k not in BATCH_SPLIT_DEEPSPEED_KEYS},
        "tokenizer_sha256": spec.tokenizer_sha256,
    }
    if getattr(spec, "preference", None) is not None:  # align jobs only: earlier jobs' fingerprints stay as they were
        payload["preference"] = config_to_dict(spec.preference)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def global_batch(train: Any, world_size: int) -> int:
    """Sequences per optimizer step: micro batch x gradient accumulation x processes."""
    return train.micro_batch_size * train.gradient_accumulation_steps * world_size


def rebatch(train: Any, target_global_batch: int, world_size: int, *, where: str = "train") -> Any:
    """``train`` with gradient accumulation set so ``world_size`` processes make ``target_global_batch``.

    The micro batch is kept (it is what fits in one device's memory). Raises ``ValueError`` saying
    what to set when ``micro_batch_size x world_size`` does not divide the global batch.
    """
    from dataclasses import replace

    per_micro_step = train.micro_batch_size * world_size
    if target_global_batch % per_micro_step:
        divisors = [w for w in range(1, target_global_batch + 1) if target_global_batch % (w * train.micro_batch_size) == 0]
        micro = [m for m in range(1, target_global_batch + 1) if target_global_batch % (m * world_size) == 0]
        fixes = [f"launch.nproc_per_node x nnodes to one of {divisors}"] if divisors else []
        if micro:
            fixes.append(f"{where}.micro_batch_size to one of {micro}")
        raise ValueError(
            f"cannot resume with {world_size} process(es): the checkpoint's global batch is {target_global_batch} "
            f"sequences, not a multiple of {where}.micro_batch_size ({train.micro_batch_size}) x {world_size} "
            f"processes. Set {' or '.join(fixes)}; or delete the checkpoints to train afresh with the new batch")
    return replace(train, gradient_accumulation_steps=target_global_batch // per_micro_step)


def saved_global_batch(ckpt_root: Path, fingerprint: str) -> tuple[int, int] | None:
    """(global batch, world size) recorded by the newest manifest of this job, unverified; None if none."""
    for tag in list_tags(ckpt_root):
        try:
            manifest = json.loads((ckpt_root / tag / MANIFEST).read_text())
        except (FileNotFoundError, json.JSONDecodeError, OSError):
            continue
        if manifest.get("fingerprint") == fingerprint and manifest.get("global_batch"):
            return int(manifest["global_batch"]), int(manifest["world_size"])
    return None


def write_manifest(ckpt_root: Path, tag: str, *, step: int, fingerprint: str, world_size: int,
                   global_batch: int | None = None, verify: str = "sha256") -> Path:
    """Mark ``ckpt_root/tag`` complete (call on rank 0 after every rank finished saving) and point ``latest`` at it."""
    tag_dir = ckpt_root / tag
    files = {}
    for file in sorted(p for p in tag_dir.rglob("*") if p.is_file() and p.name != MANIFEST):
        entry: dict[str, Any] = {"size": file.stat().st_size}
        if verify == "sha256":
            entry["sha256"] = sha256_file(file)
        files[file.relative_to(tag_dir).as_posix()] = entry
    manifest = {"step": step, "fingerprint": fingerprint, "world_size": world_size, "global_batch": global_batch,
                "files": files}
    write_atomic(tag_dir / MANIFEST, json.dumps(manifest, indent=1))
    write_atomic(ckpt_root / LATEST, tag)
    return tag_dir / MANIFEST


def verify_checkpoint(tag_dir: Path) -> tuple[dict | None, str | None]:
    """(manifest, None) when every file listed matches; (manifest or None, reason) otherwise."""
    try:
        manifest = json.loads((tag_dir / MANIFEST).read_text())
    except FileNotFoundError:
        return None, "incomplete (no manifest: the save never finished)"
    except (json.JSONDecodeError, OSError) as err:
        return None, f"unreadable manifest ({err})"
    for name, entry in manifest.get("files", {}).items():
        file = tag_dir / name
        if not file.is_file():
            return manifest, f"file {name} is missing"
        size = file.stat().st_size
        if size != entry["size"]:
            return manifest, f"file {name} is truncated or changed ({size} bytes, manifest says {entry['size']})"
        if "sha256" in entry and sha256_file(file) != entry["sha256"]:
            return manifest, f"file {name} is corrupted (SHA-256 differs from the manifest)"
    if not manifest.get("files"):
        return manifest, "the manifest lists no files"
    return manifest, None


def list_tags(ckpt_root: Path) -> list[str]:
    """Checkpoint tags under ``ckpt_root``, newest step first."""
    if not ckpt_root.is_dir():
        return []
    tags = [p.name for p in ckpt_root.iterdir() if p.is_dir() and step_of_tag(p.name) is not None]
    return sorted(tags, key=step_of_tag, reverse=True)


def find_resume_checkpoint(ckpt_root: Path, fingerprint: str,
                           global_batch: int) -> tuple[str | None, list[str]]:
    """The newest verified checkpoint of this job, or None; and the tags that are unusable (to delete).

    Logs a warning naming each skipped checkpoint and why. Checkpoints of another job (different
    fingerprint) or another global batch are never resumed: the caller starts fresh. The world size
    may differ (see ``rebatch`` and ``convert_to_universal``).
    """
    unusable: list[str] = []
    for tag in list_tags(ckpt_root):
        manifest, problem = verify_checkpoint(ckpt_root / tag)
        if problem is None and manifest["fingerprint"] != fingerprint:
            problem = (f"belongs to another job (fingerprint {manifest['fingerprint'][:12]}, this job "
                       f"{fingerprint[:12]}: tokenizer, data or parameters changed)")
        elif problem is None and manifest.get("global_batch") != global_batch:
            problem = (f"was trained with a global batch of {manifest.get('global_batch')} sequences, this job "
                       f"has {global_batch}")
        if problem is None:
            if unusable:
                logger.warning("resuming from %s, the newest verified checkpoint (newer unusable: %s)", ckpt_root / tag,
                               ", ".join(unusable))
            return tag, unusable
        logger.warning("checkpoint %s skipped: %s", ckpt_root / tag, problem)
        unusable.append(tag)
    return None, unusable


def saved_world_size(tag_dir: Path) -> int:
    return int(json.loads((tag_dir / MANIFEST).read_text())["world_size"])


def convert_to_universal(tag_dir: Path) -> Path:
    """Convert a ZeRO checkpoint to DeepSpeed's universal format in ``<tag>/universal`` (once; atomic).

    Universal checkpoints hold every parameter's fp32 weights and optimizer moments whole, so any
    number of processes can load them (``"checkpoint": {"load_universal": true}``). Call on one rank.
    """
    import argparse

    from deepspeed.checkpoint import ds_to_universal

    out = tag_dir / UNIVERSAL
    done = out / ".complete"
    if done.is_file():
        return out
    tmp = tag_dir / f".{UNIVERSAL}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    args = argparse.Namespace(input_folder=str(tag_dir), output_folder=str(tmp), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True,
                              inject_missing_state=True)  # checkpoints saved before the loop tagged them
    ds_to_universal.main(args)
    (tmp / ".complete").write_text("ok")
    os.replace(tmp, out)
    return out


def prune_checkpoints(ckpt_root: Path, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` complete checkpoints (and any incomplete older ones)."""
    removed, complete = [], 0
    for tag in list_tags(ckpt_root):
        if (ckpt_root / tag / MANIFEST).is_file() and complete < keep:
            complete += 1
            continue
        shutil.rmtree(ckpt_root / tag, ignore_errors=True)
        removed.append(tag)
    return removed


def read_restart_count(ckpt_root: Path) -> int:
    try:
        return int(json.loads((ckpt_root / RUN_STATE).read_text())["restart_count"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError, ValueError):
        return 0


def write_restart_count(ckpt_root: Path, count: int) -> None:
    ckpt_root.mkdir(parents=True, exist_ok=True)
    write_atomic(ckpt_root / RUN_STATE, json.dumps({"restart_count": count}))
