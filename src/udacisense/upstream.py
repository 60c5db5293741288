"""Work-arounds for upstream libraries, each as narrow as it can be: notices a user can do nothing about, dropped where
we import the library that emits them (one exact message at a time, never a whole category and never our own
warnings), and a quadratic copy in torch.fx, switched off only while we export and lower."""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager
from typing import Any, Iterator

KERNEL_PREFERENCE_NOTICE = "<enum 'KernelPreference'> is an Enum subclass"


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def hush_kernel_preference_notice() -> None:
    """torchao registers its KernelPreference Enum with torch's pytree when imported (ExecuTorch's XNNPACK quantizer
    imports it too), and torch logs a deprecation for that: a 'W…' line on every run that quantizes or exports to
    ExecuTorch. Drop exactly that record from torch's pytree logger."""
    logger = logging.getLogger("torch.utils._pytree")
    if not any(isinstance(f, _DropMessage) and f.fragment == KERNEL_PREFERENCE_NOTICE for f in logger.filters):
        logger.addFilter(_DropMessage(KERNEL_PREFERENCE_NOTICE))


class _ShallowProvenanceCopy:
    """Stands in for the ``copy`` module inside ``torch.fx.traceback``: a provenance list is copied one level deep."""

    @staticmethod
    def deepcopy(value: Any) -> Any:
        return list(value) if isinstance(value, list) else copy.deepcopy(value)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


@contextmanager
def shallow_provenance_copies() -> Iterator[None]:
    """While active, torch.fx's ``NodeSource`` copies a node's provenance list (``meta["from_node"]``) instead of
    deep-copying the tree of earlier records it holds. Every pass that re-creates a node copied that tree, which grows
    with each pass: 12 of 62 profiled seconds of an int8 MobileNetV3-Small lowering. The records are never changed
    after they are made (PyTorch pull request 193051 proposes the same one-level copy). Measured: the same ``.pte``
    files byte for byte, int8 lowering 28.6 -> 24.2 s (1 thread)."""
    import torch.fx.traceback as fx_traceback

    original = fx_traceback.copy
    fx_traceback.copy = _ShallowProvenanceCopy()
    try:
        yield
    finally:
        fx_traceback.copy = original
