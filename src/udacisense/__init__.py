"""UdaciSense: shrink PyTorch image classifiers into validated mobile artifacts.

The Python API (:mod:`udacisense.api`) and the stages' parameter types are importable from here; they load on first
use, so that ``import udacisense`` (and the command line) stays quick::

    import udacisense as us
    pruned = us.compress(us.load_checkpoint("runs/baseline/best.pt"), us.PruneChannels(ratio=0.5))
"""

from typing import Any

from udacisense.errors import UdaciSenseError

__version__ = "0.1.0"

_API = ("Compressed", "compress", "create_model", "export", "load_checkpoint", "search")
_PARAMS = {"PruneChannels": "prune_channels", "PruneUnstructured": "prune_unstructured", "Factorize": "factorize",
           "Quantize": "quantize", "Distill": "distill"}
__all__ = ["UdaciSenseError", "__version__", *_API, *_PARAMS]


def __getattr__(name: str) -> Any:
    import importlib

    if name in _API:
        return getattr(importlib.import_module("udacisense.api"), name)
    if name in _PARAMS:
        return getattr(importlib.import_module(f"udacisense.stages.{_PARAMS[name]}"), name)
    raise AttributeError(f"module 'udacisense' has no attribute '{name}'")
