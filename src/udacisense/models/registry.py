"""Model registry: ``create_model(name, **kwargs)`` over builders added with ``@MODELS.register(name)``.

A name that is not registered may also be ``path/to/file.py:callable`` or
``package.module:callable`` for a user's own ``nn.Module`` factory.
"""

from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn

from udacisense.errors import UdaciSenseError
from udacisense.registry import Registry

ModelBuilder = Callable[..., nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model", other_names="or give your own as path/to/file.py:callable or package.module:callable")
register_model = MODELS.register


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model, or a user's model given as ``file.py:callable`` / ``module:callable``."""
    if ":" in name and name not in MODELS:
        from udacisense.models.user import load_user_builder

        builder = load_user_builder(name)
    else:
        builder = MODELS.get(name)
    try:
        model = builder(**kwargs)
    except TypeError as error:
        raise UdaciSenseError(f"model '{name}' does not accept these arguments {sorted(kwargs)}: {error}") from None
    if not isinstance(model, nn.Module):
        raise UdaciSenseError(f"'{name}' returned {type(model).__name__}, not a torch.nn.Module")
    return model
