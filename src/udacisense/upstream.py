"""Upstream notices a user can do nothing about, dropped where we import the library that emits them: one exact
message at a time, never a whole category and never our own warnings."""

from __future__ import annotations

import logging

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
