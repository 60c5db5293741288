"""A user's own model: ``path/to/file.py:callable`` or ``package.module:callable``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable

import torch.nn as nn

from udacisense.errors import UdaciSenseError

FORMAT = "give it as path/to/file.py:callable or package.module:callable"


def load_user_builder(spec: str) -> Callable[..., nn.Module]:
    """Import the callable named by ``spec`` (a class or a function returning an ``nn.Module``)."""
    location, _, attribute = spec.rpartition(":")
    if not location or not attribute:
        raise UdaciSenseError(f"cannot parse model '{spec}'; {FORMAT}")
    if location.endswith(".py"):
        module = _import_file(Path(location))
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as error:
            raise UdaciSenseError(f"cannot import module '{location}' for model '{spec}': {error}") from None
    builder = getattr(module, attribute, None)
    if not callable(builder):
        raise UdaciSenseError(f"'{location}' has no callable named '{attribute}'; {FORMAT}")
    return builder


def _import_file(path: Path):
    if not path.is_file():
        raise UdaciSenseError(f"model file {path} does not exist; {FORMAT}")
    module_name = f"udacisense_user_{abs(hash(str(path.resolve())))}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise UdaciSenseError(f"importing model file {path} failed: {type(error).__name__}: {error}") from None
    return module
