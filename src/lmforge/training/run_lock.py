"""Rank 0's lock on a training job's run directory, held for the whole job (``lmforge.locks.run_dir_lock``).

``launch_job`` checks the lock before it writes anything into the run directory (an orphaned trainer of a killed
run still holding it stops the new job with one line); rank 0 then takes it in ``loop.train`` before the resume
logic deletes or reads any checkpoint, and holds it until the process exits (the kernel drops it, however the
process ends), so two trainers can never write one checkpoint folder.
"""

from __future__ import annotations

import atexit
from pathlib import Path

from lmforge.locks import LockedError, OutputLock, run_dir_lock

_run_dir_lock: OutputLock | None = None  # rank 0's lock on the run directory, held until the process exits


def lock_run_dir(run_dir: str | Path, rank: int) -> None:
    """Rank 0 locks the job's run directory for the rest of the process (``lmforge.locks.run_dir_lock``).

    An orphaned trainer of a killed run (if the process watchdog ever failed) then blocks a rerun with one
    line naming it, instead of two trainers writing one checkpoint folder. A collective: every rank learns
    whether rank 0 got it and the others stop too (rank 0 raises the ``LockedError`` whose line
    ``launch_job`` shows).
    """
    import torch.distributed as dist

    global _run_dir_lock
    refusal: list[str | None] = [None]
    error = None
    if rank == 0 and _run_dir_lock is None:
        try:
            _run_dir_lock = run_dir_lock(run_dir).acquire()
            atexit.register(_run_dir_lock.release)  # a clean end empties it; a killed rank 0's JSON stays, named
        except LockedError as err:
            refusal, error = [str(err)], err
    dist.broadcast_object_list(refusal, src=0)
    if error is not None:
        raise error
    if refusal[0]:
        raise RuntimeError(f"rank 0 could not lock the run directory: {refusal[0]}")
