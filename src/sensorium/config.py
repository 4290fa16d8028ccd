"""Typed configuration helpers shared by tasks and the CLI."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

from sensorium.errors import ConfigError

T = TypeVar("T")


def as_config(cls: type[T], value: Any) -> T:
    """Accept a dataclass instance, a plain dict (from a checkpoint's hyperparameters or JSON), or
    None (defaults) and return a `cls` instance. Keeps checkpoints free of pickled classes, so they
    load with `torch.load(weights_only=True)`."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ConfigError(cls.__name__, f"expected a mapping of its fields, got {type(value).__name__} {value!r}")
    hints = typing.get_type_hints(cls)
    unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        known = ", ".join(f.name for f in dataclasses.fields(cls))
        raise ConfigError(cls.__name__, f"no field(s) {sorted(unknown)}; its fields: {known}")
    kwargs = {}
    for name, raw in value.items():
        sub = _dataclass_in(hints[name])
        if sub is not None and isinstance(raw, dict):
            raw = as_config(sub, raw)
        elif isinstance(raw, list) and _is_tuple(hints[name]):
            raw = tuple(raw)
        kwargs[name] = raw
    return cls(**kwargs)


def to_plain(value: Any) -> Any:
    """Dataclasses (nested) -> dicts; tuples -> lists; leaves other values alone."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass named by a hint such as `Foo`, `Foo | None` or `Optional[Foo]`."""
    candidates = (hint, *typing.get_args(hint))
    return next((c for c in candidates if isinstance(c, type) and dataclasses.is_dataclass(c)), None)


def _is_tuple(hint: Any) -> bool:
    return hint is tuple or typing.get_origin(hint) is tuple
