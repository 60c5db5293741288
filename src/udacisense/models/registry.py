"""Model registry: ``create_model(name, **kwargs)`` over builders added with ``@MODELS.register(name)``.

A name that is not registered may also be ``path/to/file.py:callable`` or
``package.module:callable`` for a user's own ``nn.Module`` factory.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from udacisense.errors import UdaciSenseError, first_line
from udacisense.registry import Registry

ModelBuilder = Callable[..., nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model", other_names="or give your own as path/to/file.py:callable or package.module:callable")
# The registered models the search may draw as a student distilled from the baseline (phone-sized ones, not teachers),
# each with whether it takes ``width_mult``; the search then draws its width from STUDENT_WIDTHS too.
STUDENTS: dict[str, bool] = {}
STUDENT_WIDTHS = (0.5, 0.75, 1.0)
# Where each model registered from outside the package is defined (package.module:callable, or path/to/file.py:callable
# for a module outside any package): a checkpoint carries it, so the model rebuilds in a process that never ran the
# registration (a latency probe, a later command).
MODEL_SOURCES: dict[str, str] = {}


def _builder_source(builder: ModelBuilder) -> str | None:
    """Where a fresh process can import ``builder`` from, or None: the package's own models need no source, and a
    builder in a script (``__main__``: importing it would run the script again), in a notebook (no file), or not at a
    module's top level (a lambda, a local class) cannot be imported by name."""
    module_name, qualname = getattr(builder, "__module__", None), getattr(builder, "__qualname__", "")
    module = sys.modules.get(module_name or "")
    if module is None or module_name == "__main__" or module_name.startswith("udacisense.") or not qualname.isidentifier():
        return None
    spec = getattr(module, "__spec__", None)
    if spec is not None and spec.parent:  # a package's module: by name, so that its relative imports work
        return f"{module_name}:{qualname}"
    file = getattr(module, "__file__", None)
    return f"{Path(file).resolve()}:{qualname}" if file else None


def register_model(name: str, *, student: bool = False, width_mult: bool = False) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: register ``builder(num_classes=..., in_channels=..., **kwargs) -> nn.Module`` as the model ``name``.
    ``student=True`` lets the search draw it as a student distilled from the baseline (``width_mult=True``: at each of
    :data:`STUDENT_WIDTHS`, passed as ``width_mult``)."""

    def add(builder: ModelBuilder) -> ModelBuilder:
        MODELS.register(name, builder)
        source = _builder_source(builder)
        if source:
            MODEL_SOURCES[name] = source
        if student:
            STUDENTS[name] = width_mult
        return builder

    return add


def create_model(name: str, source: str | None = None, /, **kwargs: Any) -> nn.Module:
    """Build a registered model, or a user's model given as ``file.py:callable`` / ``module:callable``. ``source`` is where
    a model registered from outside the package is defined (:data:`MODEL_SOURCES`, kept in its checkpoints): used when
    this process has not registered ``name``. Both are positional-only, so a model may take keyword arguments of those names."""
    if name not in MODELS and (":" in name or source):
        from udacisense.models.user import load_user_builder

        builder = load_user_builder(name if ":" in name else source)
    else:
        builder = MODELS.get(name)
    try:
        model = builder(**kwargs)
    except TypeError as error:
        raise UdaciSenseError(f"model '{name}' does not accept these arguments {sorted(kwargs)}: {error}") from None
    if not isinstance(model, nn.Module):
        raise UdaciSenseError(f"'{name}' returned {type(model).__name__}, not a torch.nn.Module")
    return model


def check_fits(model: nn.Module, name: str, input_shape: tuple[int, ...], num_classes: int) -> None:
    """One zero image of ``input_shape`` (C, H, W) through ``model`` in eval mode, before any training: a model that
    cannot take the data's images (another channel count, a size its architecture cannot reach) or that gives another
    number of outputs than the data has classes fails here in one line, not in a traceback during the first epoch."""
    import torch

    training = model.training
    try:
        with torch.no_grad():
            logits = model.eval()(torch.zeros(1, *input_shape))
    except (RuntimeError, ValueError) as error:  # a layer's shape complaint says which layer and what it expected; a bug keeps its traceback
        size = "x".join(str(side) for side in input_shape)
        raise UdaciSenseError(f"model '{name}' cannot take this data's {size} images (channels x height x width): {first_line(error)}") from None
    finally:
        model.train(training)
    if tuple(logits.shape) != (1, num_classes):
        raise UdaciSenseError(f"model '{name}' gives outputs of shape {tuple(logits.shape)} for one image, not (1, {num_classes}): "
                              f"build it with num_classes={num_classes}")
