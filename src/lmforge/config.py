"""Typed config from plain dicts (Kedro params): one builder, so every stage rejects typos the same way.

``build_dataclass(TrainArgs, params["train"], path="pretrain.train")`` builds the dataclass,
recursing into dataclass-typed fields, and raises ``ValueError`` naming any unknown key by its
dotted path (``pretrain.train.max_step``) with the valid keys, instead of silently ignoring it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any


def build_dataclass(cls: type, d: Mapping[str, Any], *, path: str) -> Any:
    """Build dataclass cls from a dict, recursing into dataclass-typed fields.

    Raises ValueError naming unknown keys by their dotted path (e.g. "cleaning.min_char").
    """
    if not isinstance(d, Mapping):
        raise TypeError(f"{path} must be a mapping, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(
            f"unknown key(s) in {path}: {', '.join(f'{path}.{k}' for k in unknown)}; "
            f"expected some of: {', '.join(known)}"
        )
    kwargs = {}
    for name, value in d.items():
        default = known[name].default_factory
        nested_cls = type(default()) if callable(default) else None
        if nested_cls is not None and is_dataclass(nested_cls) and isinstance(value, Mapping):
            value = build_dataclass(nested_cls, value, path=f"{path}.{name}")
        kwargs[name] = value
    return cls(**kwargs)
