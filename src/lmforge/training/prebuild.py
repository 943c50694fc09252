"""Build DeepSpeed's JIT ops that the chosen accelerator needs, once, at install time.

On CPU, DeepSpeed compiles its shared-memory all-reduce op (``deepspeed_shm_comm``, ~1-2 minutes)
the first time a process group starts and caches it under $TORCH_EXTENSIONS_DIR (the Makefile sets
.venv/torch_extensions; torch's default is ~/.cache/torch_extensions). Building it
during ``make install`` keeps that cost out of the first training run (and out of test timeouts).
"""

from __future__ import annotations

import argparse
import logging
import time

logger = logging.getLogger(__name__)


def prebuild_ops(*, cpu_adam: bool = False) -> list[str]:
    """Load (building if needed) every op the current accelerator's comm backend uses; return their names.

    ``cpu_adam`` also builds DeepSpeedCPUAdam, needed by ``deepspeed.offload_optimizer: cpu``
    (measured 282 s on 2 loaded cores, so it is opt-in).
    """
    from deepspeed.accelerator import get_accelerator

    built = []
    names = ["ShareMemCommBuilder"] + (["CPUAdamBuilder"] if cpu_adam else [])
    for name in names:
        builder = get_accelerator().create_op_builder(name)
        if builder is not None:
            builder.load()
            built.append(builder.absolute_name())
    return built


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lmforge.training.prebuild", description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-adam", action="store_true",
                        help="also build DeepSpeedCPUAdam (optimizer offload; ~5 min on 2 cores)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    names = prebuild_ops(cpu_adam=args.cpu_adam)
    logger.info("DeepSpeed ops ready (%s) in %.0f s", ", ".join(names) or "none needed", time.perf_counter() - started)


if __name__ == "__main__":
    main()
