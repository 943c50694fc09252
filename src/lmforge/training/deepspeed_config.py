"""Generate the DeepSpeed JSON from a template and the typed training arguments.

Templates live in ``conf/base/deepspeed/zero<stage>.json``; values written ``"auto"`` are filled
from ``TrainArgs`` here (the same convention as Hugging Face's integration), so batch size,
accumulation, clipping and precision are declared once, in ``parameters_<stage>.yml``.
"""

from __future__ import annotations

import copy
from typing import Any

from lmforge.training.config import DeepSpeedArgs, TrainArgs


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_deepspeed_config(templates: dict[str, dict[str, Any]], train: TrainArgs, ds: DeepSpeedArgs) -> dict[str, Any]:
    """Resolve ``zero<stage>`` from ``templates`` into a complete DeepSpeed config dict."""
    key = f"zero{ds.zero_stage}"
    if key not in templates:
        raise ValueError(f"no DeepSpeed template {key!r} (have {sorted(templates)}); "
                         f"add conf/base/deepspeed/{key}.json or pick another zero_stage")
    auto = {
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "gradient_clipping": train.grad_clip,
        "bf16": {"enabled": train.precision == "bf16"},
        "fp16": {"enabled": train.precision == "fp16"},
    }

    def fill(node: Any, auto_node: Any) -> Any:
        if isinstance(node, dict):
            return {k: fill(v, auto_node.get(k) if isinstance(auto_node, dict) else None) for k, v in node.items()}
        if node == "auto":
            if auto_node is None:
                raise ValueError(f"template {key}: an 'auto' value has no automatic source")
            return auto_node
        return node

    config = fill(templates[key], auto)
    for name, value in auto.items():  # keys the template left out are still set
        config.setdefault(name, value)
    stage = config.setdefault("zero_optimization", {}).get("stage", ds.zero_stage)
    if stage != ds.zero_stage:
        raise ValueError(f"template {key} declares ZeRO stage {stage}, expected {ds.zero_stage}")
    for name in ("offload_optimizer", "offload_param"):
        if getattr(ds, name) != "none":
            config["zero_optimization"][name] = {"device": getattr(ds, name), "pin_memory": ds.offload_pin_memory}
    return _merge(config, ds.overrides)


def offloads_optimizer(config: dict[str, Any]) -> bool:
    """True when the resolved config keeps the optimizer on the CPU (it then needs DeepSpeedCPUAdam)."""
    device = config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    return device not in {None, "none"}


def needs_gradient_allreduce(config: dict[str, Any], world_size: int) -> bool:
    """False for one process without ZeRO: DeepSpeed's gradient all-reduce is then the identity.

    DeepSpeed still runs it at every optimizer step, copying every gradient into a flat buffer and back:
    ~4% of a step of a ~100M-parameter model on CPU (``bench/sft_vs_trl.py``). The training loop turns it
    off there (``engine.enable_backward_allreduce``). ZeRO stages >= 1 reduce through their own optimizer.
    """
    return world_size > 1 or config.get("zero_optimization", {}).get("stage", 0) != 0
