"""Where the per-shard work of the data-processing stage runs: in this process, a process pool or Ray.

Kept apart from the steps (as datatrove keeps ``executor/`` apart from its pipeline steps): a step
is a picklable function of one task, and `map_in_order` runs it over tasks on the configured
executor and yields the results in task order, so the stage's result never depends on the
executor or on the number of workers.

Executors (`ExecutorConfig.kind`): "local" (a process pool of `workers`, default every core),
"sequential" (in this process, for debugging) and "ray" (`ray.util.multiprocessing.Pool`, on a
running Ray cluster with `ray_address`; files the workers write must then be on a folder every
node shares).

Nothing outlives the stage: each "local" pool worker guards itself (``lmforge.processes.guard_process`` as
the pool initializer, the owner being the process that made the pool): a worker whose owner is SIGKILLed
ends within ~1 s (a plain pool worker would block on its task queue forever). "ray" (not installed by
default, not tested here): ``ray.init()`` without an address starts a local cluster whose processes share
the driver's fate (Ray's ``set_kill_on_parent_death_linux``: PR_SET_PDEATHSIG SIGKILL on GCS and raylet),
and a raylet's workers exit when their raylet goes; on a running cluster (``ray_address``) the workers are
the cluster's, and Ray ends a dead driver's tasks itself.
"""

from __future__ import annotations

import os
import pickle
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from lmforge.data.documents import ShardSource, load_shard

EXECUTORS = ("local", "sequential", "ray")


@dataclass
class ExecutorConfig:
    """Where the per-shard cleaning runs (`data_processing.executor`); results do not depend on it."""

    kind: str = "local"
    """"local" (process pool on this machine), "sequential" (this process) or "ray" (Ray cluster)."""
    workers: int | None = None
    """Parallel workers; None = every core of this machine (os.cpu_count())."""
    spool_dir: str | None = None
    """Parent folder of the temporary spool (per-shard kept/quarantine/shingle files); None = system temp.
    With "ray" on several machines it must be a folder every node can read and write."""
    ray_address: str | None = None
    """"ray": cluster address passed to ray.init ("auto" = the running cluster); None = a local Ray."""
    start_method: str | None = None
    """"local": multiprocessing start method ("fork", "spawn", "forkserver"); None = the platform's default."""

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"data_processing.executor.kind must be one of {EXECUTORS}, got {self.kind!r}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"data_processing.executor.workers must be >= 1 or null (all cores), got {self.workers}")

    def resolved_workers(self) -> int:
        """Number of workers to start (1 for "sequential")."""
        if self.kind == "sequential":
            return 1
        return self.workers or os.cpu_count() or 1


def is_picklable(obj: Any) -> bool:
    """Whether obj can be sent to another process."""
    try:
        pickle.dumps(obj)
    except Exception:  # noqa: BLE001 - any pickling failure means "load it here instead"
        return False
    return True


def sendable_shard(source: ShardSource, executor: ExecutorConfig) -> ShardSource:
    """The shard as a worker can receive it: a loader that pickles is sent (the worker reads the
    data), anything else is loaded here, one shard at a time."""
    if executor.kind == "local" and executor.resolved_workers() > 1 and callable(source) and not is_picklable(source):
        return load_shard(source)
    return source


def map_in_order(fn: Callable[[Any], Any], tasks: Iterable[Any], executor: ExecutorConfig) -> Iterator[Any]:
    """Yield fn(task) for every task, in task order, on the configured executor (1 worker: in this process).

    At most 2 x workers tasks are in flight, so a lazy `tasks` iterable is consumed (and its
    shards loaded) only as fast as workers finish: memory stays bounded by a few shards.
    """
    workers = executor.resolved_workers()
    if workers == 1:
        for task in tasks:
            yield fn(task)
        return
    if executor.kind == "ray":
        try:
            import ray
            from ray.util.multiprocessing import Pool as RayPool
        except ImportError as exc:
            raise ImportError("executor.kind 'ray' needs Ray: pip install 'lmforge[cluster]' "
                              "(or set data_processing.executor.kind to 'local')") from exc
        if not ray.is_initialized():
            ray.init(address=executor.ray_address, ignore_reinit_error=True, log_to_driver=False)
        pool = RayPool(processes=workers)
    else:
        import multiprocessing

        from lmforge.processes import guard_process, owner_token

        pool = multiprocessing.get_context(executor.start_method).Pool(workers, initializer=guard_process,
                                                                       initargs=(owner_token(),))
    try:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.apply_async(fn, (task,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
    finally:
        pool.terminate()
        pool.join()
