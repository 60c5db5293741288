"""A clean console: upstream notices a user can do nothing about are dropped where we import their library."""

import subprocess
import sys


def test_torchaos_import_notice_is_dropped_and_other_pytree_warnings_are_not():
    """Importing torchao (or ExecuTorch's XNNPACK backend, which imports it) logs a deprecation through torch's pytree
    logger ('<enum KernelPreference> is an Enum subclass…', seen in every demo before): gone, and only that record."""
    code = ("import logging\nimport udacisense.techniques.quantize\nimport torchao.quantization.pt2e\n"
            "from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner\n"
            "logging.getLogger('torch.utils._pytree').warning('another notice')\n")
    stderr = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert "KernelPreference" not in stderr and "another notice" in stderr
