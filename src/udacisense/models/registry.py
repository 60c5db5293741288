"""Model registry: ``create_model(name, **kwargs)`` over builders added with ``@register_model``.

A name that is not registered may also be ``path/to/file.py:callable`` or
``package.module:callable`` for a user's own ``nn.Module`` factory.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

import torch.nn as nn

from udacisense.errors import UdaciSenseError

ModelBuilder = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator that makes a builder available to :func:`create_model` under ``name``."""

    def add(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        _REGISTRY[name] = builder
        return builder

    return add


def list_models() -> list[str]:
    """Registered model names."""
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model, or a user's model given as ``file.py:callable`` / ``module:callable``."""
    if name in _REGISTRY:
        builder = _REGISTRY[name]
    elif ":" in name:
        from udacisense.models.user import load_user_builder

        builder = load_user_builder(name)
    else:
        close = difflib.get_close_matches(name, list_models(), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UdaciSenseError(
            f"unknown model '{name}'; {hint}known: {', '.join(list_models())} "
            "(or give your own as path/to/file.py:callable or package.module:callable)"
        )
    try:
        model = builder(**kwargs)
    except TypeError as error:
        raise UdaciSenseError(f"model '{name}' does not accept these arguments {sorted(kwargs)}: {error}") from None
    if not isinstance(model, nn.Module):
        raise UdaciSenseError(f"'{name}' returned {type(model).__name__}, not a torch.nn.Module")
    return model
