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


# XNNPACK's passes that fuse a decomposed pattern back into one operator, with the operator every variant of the
# pattern contains: a graph without that operator cannot match any of them.
_PATTERN_PASSES = (
    ("executorch.backends.xnnpack._passes.convert_to_upsample_bilinear2d", "ConvertToUpsampleBilinear2d", "bilinear_2d", "get_graphs_dict",
     "upsample_bilinear2d"),
    ("executorch.backends.xnnpack._passes.convert_to_sdpa", "ConvertToSDPAPass", "sdpa", "get_graphs", "_softmax"),
)


@contextmanager
def xnnpack_patterns_only_where_they_can_match() -> Iterator[None]:
    """While active, XNNPACK's bilinear-upsample and attention passes build their pattern graphs only for a graph that
    holds the operator every pattern contains; otherwise they match against no patterns (and still retrace, as
    before). Building the patterns exports a dozen small programs: 1.7 s for the bilinear ones alone, paid once per
    process that lowers a ``.pte``, for models (CNNs without upsampling or attention) that can never match them.
    Measured: the same ``.pte`` files byte for byte (fp32 and int8; MobileNetV3-Small and a model with bilinear
    upsampling), and MobileNetV3-Small's first fp32 lowering in a process 19.8 -> 16.0 s."""
    import importlib

    patched = []
    for module_name, class_name, holder, getter, anchor in _PATTERN_PASSES:
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
        patterns = getattr(module, holder)
        original_call = cls.call

        def call(self, graph_module, original_call=original_call, patterns=patterns, getter=getter, anchor=anchor):
            if any(node.op == "call_function" and anchor in str(node.target) for node in graph_module.graph.nodes):
                return original_call(self, graph_module)
            built = getattr(patterns, getter)
            setattr(patterns, getter, lambda: {} if getter.endswith("dict") else [])
            try:
                return original_call(self, graph_module)
            finally:
                setattr(patterns, getter, built)

        cls.call = call
        patched.append((cls, original_call))
    try:
        yield
    finally:
        for cls, original_call in patched:
            cls.call = original_call
