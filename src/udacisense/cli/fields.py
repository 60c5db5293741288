"""Command-line flags generated from pydantic models: one flag per field, named as the field (``--param-ratio`` for
``param_ratio``), typed from its annotation, with the field's description and default as its help. The compression
commands take their flags from their stages' parameter models this way, so a parameter declared once is a recipe
key, a flag and (see :meth:`StageParams.search_space`) a search dimension."""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from udacisense.cli.common import key_values, names
from udacisense.io import parse_yaml


def add_field_flags(parser: argparse.ArgumentParser | Any, models: dict[str, type[BaseModel]], *, only: tuple[str, ...] = (),
                    skip: tuple[str, ...] = (), show_defaults: bool = True) -> None:
    """A flag for every field of ``models`` (by label; a field several models share is one flag whose help names each
    model's meaning when they differ). Nested sections (a field whose type is a model) get none: the command gives
    them flags of their own. Every flag defaults to None, so that only what the user sets reaches the recipe."""
    fields: dict[str, list[tuple[str, FieldInfo]]] = {}
    for label, model in models.items():
        for name, info in model.model_fields.items():
            if name in skip or (only and name not in only) or _is_section(info.annotation):
                continue
            fields.setdefault(name, []).append((label, info))
    for name, entries in fields.items():
        texts = {label: _help(info, show_defaults) for label, info in entries}
        help_text = next(iter(texts.values())) if len(set(texts.values())) == 1 else "; ".join(f"{label}: {text}" for label, text in texts.items())
        flag = f"--{name.replace('_', '-')}"
        parsing = _parsing(entries[0][1].annotation, flag)
        if "choices" in parsing:  # a shared field whose models allow different values: any of them (the stage's model checks)
            parsing["choices"] = list(dict.fromkeys(choice for _, info in entries for choice in _parsing(info.annotation, flag)["choices"]))
        parser.add_argument(flag, dest=name, default=None, help=help_text, **parsing)


def field_values(args: argparse.Namespace, model: type[BaseModel], only: tuple[str, ...] = ()) -> dict[str, Any]:
    """{field: value} of ``model``'s fields (not its sections) the user set on the command line."""
    return {name: getattr(args, name) for name, info in model.model_fields.items()
            if (not only or name in only) and not _is_section(info.annotation) and getattr(args, name, None) is not None}


def _help(info: FieldInfo, show_default: bool) -> str:
    text = info.description or ""
    default = info.get_default(call_default_factory=True) if not info.is_required() else PydanticUndefined
    if show_default and default not in (PydanticUndefined, None, (), {}, []):
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text = f"{text} (default {shown})" if text else f"default {shown}"
    return text.replace("%", "%%")  # argparse formats help with %


def _optional_removed(annotation: Any) -> Any:
    arguments = [argument for argument in typing.get_args(annotation) if argument is not type(None)]
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return arguments[0] if is_union and len(arguments) == 1 else annotation


def _is_section(annotation: Any) -> bool:
    annotation = _optional_removed(annotation)
    parts = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)
    return any(isinstance(part, type) and issubclass(part, BaseModel) for part in parts)


def _parsing(annotation: Any, flag: str) -> dict[str, Any]:
    """argparse's type, choices or action for a field's annotation."""
    annotation = _optional_removed(annotation)
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        return {"choices": list(arguments), "type": type(arguments[0])}
    if annotation in (int, float, str, Path):
        return {"type": annotation}
    if origin is tuple:
        element = arguments[0]
        return {"type": (lambda text: tuple(element(part) for part in names(text))), "metavar": "A,B,..."}
    if origin is dict:
        return {"type": lambda text: key_values(list(names(text)), flag), "metavar": "KEY=VALUE,..."}
    return {"type": lambda text: parse_yaml(text, flag)}  # any other union (e.g. a number or 'auto'): the field validates it
