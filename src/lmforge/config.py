"""Typed config from plain dicts (Kedro params): one builder, so every stage rejects typos the same way.

``build_dataclass(TrainArgs, params["train"], path="pretrain.train")`` builds the dataclass,
recursing into dataclass-typed fields (found from the field's type annotation, ``X | None``
included), and raises ``ValueError`` naming any unknown key by its dotted path
(``pretrain.train.max_step``) with the valid keys, instead of silently ignoring it.

The other direction, for logging and for the workers of a launched job:

- ``config_to_dict(obj)`` turns a config (nested dataclasses, tuples) back into plain JSON values;
  ``build_dataclass(cls, config_to_dict(obj), path=...)`` gives an equal object back.
- ``flatten_config(obj, prefix)`` gives the fully resolved config as flat ``a.b.c`` keys with string
  values, what MLflow's compare view needs to show two runs' differences.
- ``default_mismatches(cls, mapping, path)`` lists every leaf of a YAML mapping whose value differs
  from the dataclass default, so a test proves the YAML and the dataclass say the same thing.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from typing import Any


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass in a field annotation (``X``, ``X | None``, ``Optional[X]``), else None."""
    if isinstance(tp, type) and is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if isinstance(a, type) and is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


def _field_types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation that cannot be resolved: fall back to the defaults
        return {}


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
    hints = _field_types(cls)
    kwargs = {}
    for name, value in d.items():
        nested_cls = _dataclass_of(hints.get(name))
        if nested_cls is None:
            default = known[name].default_factory
            nested_cls = type(default()) if callable(default) else None
        if nested_cls is not None and is_dataclass(nested_cls) and isinstance(value, Mapping):
            value = build_dataclass(nested_cls, value, path=f"{path}.{name}")
        kwargs[name] = value
    return cls(**kwargs)


def config_to_dict(obj: Any) -> Any:
    """Plain JSON values of a config: dataclasses as dicts, tuples as lists (recursively)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: config_to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): config_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [config_to_dict(v) for v in obj]
    return obj


def flatten_config(obj: Any, prefix: str = "", sep: str = ".") -> dict[str, str]:
    """The resolved config as flat ``prefix.a.b`` keys with string values (lists as JSON), for MLflow params."""
    flat: dict[str, str] = {}

    def walk(value: Any, name: str) -> None:
        if isinstance(value, Mapping) and value:
            for key, sub in value.items():
                walk(sub, f"{name}{sep}{key}" if name else str(key))
        elif isinstance(value, str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, sort_keys=True, ensure_ascii=False)

    walk(config_to_dict(obj), prefix)
    return flat


def default_mismatches(cls: type, mapping: Mapping[str, Any], *, path: str) -> list[str]:
    """Leaves of ``mapping`` (a YAML section) whose value differs from ``cls``'s default, as readable lines.

    A key the dataclass does not know is reported too; a field without a default is skipped (the
    YAML must give it). Nested dataclass fields are compared leaf by leaf; a list of dataclasses entry by
    entry, each YAML mapping built into the default entry's class (so it may omit fields at their default).
    """
    problems: list[str] = []
    known = {f.name: f for f in fields(cls)}
    hints = _field_types(cls)
    for key, value in mapping.items():
        where = f"{path}.{key}"
        f = known.get(key)
        if f is None:
            problems.append(f"{where}: not a field of {cls.__name__}")
            continue
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            continue
        nested = _dataclass_of(hints.get(key)) or (type(default) if is_dataclass(default) else None)
        if nested is not None and isinstance(value, Mapping):
            if is_dataclass(default):
                problems += default_mismatches(nested, value, path=where)
            elif default is None:
                problems.append(f"{where}: YAML sets {value!r}, dataclass default is None")
            continue
        if (isinstance(default, list) and default and all(is_dataclass(d) for d in default)
                and isinstance(value, list) and all(isinstance(v, Mapping) for v in value)):
            # a list of dataclasses: the YAML's entries may leave fields at their default
            built = [build_dataclass(type(d), v, path=f"{where}[{i}]")
                     for i, (d, v) in enumerate(zip(default, value, strict=False))]
            value = built + value[len(default):]
        if config_to_dict(default) != config_to_dict(value):
            problems.append(f"{where}: YAML says {value!r}, {cls.__name__}.{key} defaults to {default!r}")
    return problems


def replace(obj: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` re-exported, so callers import one config module."""
    return dataclasses.replace(obj, **changes)
