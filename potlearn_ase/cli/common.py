"""What several ``potlearn`` sub-commands share: options read from configuration dataclasses,
label-key options, and the help layout that shows every default.

Command-line defaults come from the configuration dataclasses themselves
(:func:`add_config_options` reads each field's default, type and the text of its entry in the
class's numpy-style ``Attributes`` section, unit included), so a default is stated once.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from collections.abc import Iterable
from typing import Any, TypeVar, Union

from potlearn_ase.data.labels import LabelKeys

__all__ = [
    "DefaultsHelpFormatter",
    "add_config_options",
    "add_label_key_arguments",
    "attribute_docs",
    "config_from_args",
]

T = TypeVar("T")


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that ends every option's text with its default (``--help`` of every command)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default is argparse.SUPPRESS:
            return text
        if not action.option_strings or isinstance(action, argparse._VersionAction):
            return text
        if action.default is None or action.default is False and action.nargs == 0:
            shown = "not set" if action.default is None else "off"
            return f"{text} (default: {shown})"
        return f"{text} (default: %(default)s)"


def attribute_docs(cls: type) -> dict[str, str]:
    """Field name -> first sentence of its entry in the ``Attributes`` (or ``Parameters``)
    section of ``cls``'s numpy-style docstring."""
    doc = cls.__doc__ or ""
    m = re.search(r"\n\s*(Attributes|Parameters)\n\s*-+\n(.*?)(\n\s*\n\s*[A-Z][a-z]+\n\s*-+|$)",
                  doc, flags=re.S)
    if not m:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    for line in m.group(2).splitlines():
        head = re.match(r"^\s{0,8}([a-z_][a-z_0-9]*(?:\s*,\s*[a-z_][a-z_0-9]*)*)\s*:", line)
        if head and not line.startswith(" " * 8):
            names = [n.strip() for n in head.group(1).split(",")]
            for n in names:
                out[n] = ""
        elif names and line.strip():
            for n in names:
                out[n] = (out[n] + " " + line.strip()).strip()
    return {k: v.replace("``", "") for k, v in out.items() if v}


def _number_or_word(text: str) -> float | str:
    """A number where the text is one (``1e-3``), else the word (``evidence``)."""
    try:
        return float(text)
    except ValueError:
        return text


def _scalar_type(tp: Any) -> tuple[Any, bool]:
    """The argparse ``type`` of a field annotation, and whether the field takes a list."""
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (Union, getattr(__import__("types"), "UnionType", Union)):
        if len(args) == 1:
            return _scalar_type(args[0])
        if str in args and float in args:
            return _number_or_word, False
        if str in args:
            return str, False
        return (float if float in args else args[0]), False
    if origin in (tuple, list):
        return (args[0] if args and args[0] is not Ellipsis else str), True
    if origin is typing.Literal:
        return type(args[0]), False
    return tp, False


def add_config_options(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    only: Iterable[str] | None = None,
    skip: Iterable[str] = (),
    dest_prefix: str = "",
    defaults: Any = None,
    aliases: dict[str, list[str]] | None = None,
) -> None:
    """Add one ``--field-name`` option per field of the dataclass ``cls``.

    The default is the field's default (or ``defaults``'s value, an instance of ``cls``), the
    help text is the field's docstring entry, booleans become ``--name/--no-name`` and tuple
    fields take several values. :func:`config_from_args` reads them back.
    """
    hints = typing.get_type_hints(cls)
    docs = attribute_docs(cls)
    base = defaults if defaults is not None else None
    names = list(only) if only is not None else [f.name for f in dataclasses.fields(cls)]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for name in names:
        if name in skip or name not in fields:
            continue
        f = fields[name]
        if base is not None:
            default = getattr(base, name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        flags = [*(aliases or {}).get(name, []), "--" + name.replace("_", "-")]
        dest = dest_prefix + name
        help_text = docs.get(name, name.replace("_", " "))
        tp, many = _scalar_type(hints[name])
        if tp is bool:
            parser.add_argument(*flags, dest=dest, action=argparse.BooleanOptionalAction,
                                default=default, help=help_text)
            continue
        choices = None
        if typing.get_origin(hints[name]) is typing.Literal:
            choices = list(typing.get_args(hints[name]))
        kwargs: dict[str, Any] = {
            "dest": dest, "default": default, "help": help_text, "metavar": name.upper()
        }
        if tp in (int, float, str, _number_or_word):
            kwargs["type"] = tp
        if many:
            kwargs["nargs"] = "+"
        if choices:
            kwargs["choices"] = choices
            del kwargs["metavar"]
        parser.add_argument(*flags, **kwargs)


def config_from_args(cls: type[T], args: argparse.Namespace, *, dest_prefix: str = "",
                     **overrides: Any) -> T:
    """An instance of ``cls`` from the options :func:`add_config_options` added (fields
    without an option keep their default); ``overrides`` win."""
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        dest = dest_prefix + f.name
        if f.init and hasattr(args, dest):
            v = getattr(args, dest)
            values[f.name] = tuple(v) if isinstance(v, list) else v
    values.update(overrides)
    from potlearn_ase.config import from_mapping

    return from_mapping(cls, values)


def add_label_key_arguments(parser: argparse.ArgumentParser) -> None:
    """``--energy-key``, ``--forces-key``, ``--stress-key`` and ``--virial-key``."""
    d = LabelKeys()
    parser.add_argument("--energy-key", default=d.energy, help="info key of the energy")
    parser.add_argument("--forces-key", default=d.forces, help="per-atom array of the forces")
    parser.add_argument("--stress-key", default=d.stress, help="info key of the stress")
    parser.add_argument(
        "--virial-key", default=d.virial, help="info key of a virial (used without a stress)"
    )
