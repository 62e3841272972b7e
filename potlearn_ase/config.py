"""Typed configuration from YAML/JSON mappings with errors that name the key at fault.

Configurations are frozen dataclasses; :func:`from_mapping` builds one from a plain mapping,
refusing unknown keys and values of the wrong type (``ConfigError: md.steps: expected int,
got str 'many'``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, Union

from potlearn_ase.errors import ConfigError

__all__ = ["from_mapping", "load_config", "read_config_file", "to_mapping"]

T = TypeVar("T")


def _unique_key_loader(path: Path) -> type:
    """A ``yaml.SafeLoader`` whose mappings refuse a key given twice (YAML would keep the last)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # keys given explicitly may override merged ones
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the default constructor reports it
                continue
            if first is not None:
                raise ConfigError(
                    f"{path}, line {line}: duplicate key {key!r} (first given on line {first}); "
                    "YAML would silently keep the last value"
                )
            seen[key] = line
        loader.flatten_mapping(node)
        return loader.construct_mapping(node, deep=True)

    UniqueKeyLoader.add_constructor(
        yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping
    )
    return UniqueKeyLoader


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) file into a mapping; errors name the file.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ConfigError
        Not valid YAML, not a mapping, or a key given twice in one mapping (naming the file,
        the line and the key).
    """
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_unique_key_loader(path))  # noqa: S506
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _check(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = {}
        for option in args:
            try:
                return _check(value, option, where)
            except ConfigError as exc:
                errors[option] = exc
        # a mapping can only have meant the dataclass option: its own error says what is wrong
        mapped = [a for a in args if dataclasses.is_dataclass(a)]
        if isinstance(value, Mapping) and len(mapped) == 1:
            raise errors[mapped[0]]
        names = " or ".join(_name(a) for a in args)
        raise ConfigError(f"{where}: expected {names}, got {type(value).__name__} {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return from_mapping(tp, value, where=where)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_check(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_check(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if (origin is tuple or tp is tuple) else out
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)


def from_mapping(
    cls: type[T], data: Mapping[str, Any], *, where: str = "", kind: str | None = None
) -> T:
    """Build the frozen dataclass ``cls`` from ``data``, checking keys and types.

    Unknown keys, missing required keys and values of the wrong type are a
    :class:`ConfigError` naming the key (``where`` is its prefix, e.g. ``"md"``; ``kind``
    names the variant in messages, as for triggers). Errors raised by the dataclass's own
    checks (``__post_init__``) are re-raised as :class:`ConfigError` prefixed by ``where``.
    """
    upgrade = getattr(cls, "upgrade_mapping", None)
    if upgrade is not None:  # a class that still reads an older layout of its keys
        data = upgrade(data, where or cls.__name__)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    prefix = f"{where}." if where else ""
    for_kind = f" for kind {kind!r}" if kind else ""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]!s}{for_kind}; known keys: {', '.join(sorted(fields))}"
        )
    missing = [
        name
        for name, f in fields.items()
        if name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{prefix}{missing[0]} is required{for_kind}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _check(value, hints[name], f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None


def load_config(cls: type[T], source: str | Path | Mapping[str, Any] | T) -> T:
    """The configuration ``cls`` from a YAML/JSON file, a mapping, or an instance (as is).

    The one entry point of every configuration file: a file's errors (unknown, missing,
    duplicate or mistyped keys, bad values) are a :class:`ConfigError` that starts with the
    file's path and names the key.
    """
    if isinstance(source, cls):
        return source
    if isinstance(source, Mapping):
        return from_mapping(cls, source)
    if not isinstance(source, (str, Path)) and not hasattr(source, "__fspath__"):
        raise ConfigError(
            f"expected a configuration file, a mapping or a {cls.__name__}, "
            f"got {type(source).__name__}"
        )
    data = read_config_file(source)
    try:
        return from_mapping(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def to_mapping(obj: Any) -> Any:
    """Plain (YAML-able) data from a dataclass instance."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_mapping(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_mapping(v) for k, v in obj.items()}
    return obj
