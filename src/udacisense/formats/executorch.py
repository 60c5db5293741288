"""ExecuTorch ``.pte`` lowered to the XNNPACK delegate, fp32 or int8 (PT2E): the ExecuTorch runtime runs it here, and
its Android and iOS libraries load it in an app (the app code below)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn as nn

from udacisense.errors import UdaciSenseError
from udacisense.formats.base import AppCode, ExportFormat, Runner, Runtime, Snippet, check_input, fp32_exporter, int8_exporter
from udacisense.io import atomic_write
from udacisense.upstream import hush_kernel_preference_notice, shallow_provenance_copies, xnnpack_patterns_only_where_they_can_match

hush_kernel_preference_notice()  # torchao's import-time notice (see upstream.py), before anything imports torchao


def export_pte(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    calibration_batches: Iterable[torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Write ``model`` as an XNNPACK-lowered ``.pte``; int8 when calibration batches are given.

    Returns what was delegated: XNNPACK runs delegated nodes with its optimized kernels, the rest
    falls back to ExecuTorch's portable kernels, which can be many times slower; when some were not, also what they
    cost (``outside_delegate``: :func:`time_outside_delegate`).
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    from udacisense.techniques.quantize import quantize_pt2e_static  # here: registering the formats should not import the quantizer

    # graphs from torch.export (e.g. a saved int8 program) are already in inference form and refuse .eval()
    source = model if isinstance(model, torch.fx.GraphModule) else model.eval()
    if calibration_batches is not None:
        source = quantize_pt2e_static(model, example, calibration_batches)
    with shallow_provenance_copies(), xnnpack_patterns_only_where_they_can_match():
        exported = torch.export.export(source, (example,))
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
        info = get_delegation_info(edge.exported_program().graph_module)
        program = edge.to_executorch()
    atomic_write(path, lambda handle: handle.write(program.buffer))
    table = info.get_operator_delegation_dataframe()
    not_delegated = {
        row.op_type: int(row.occurrences_in_non_delegated_graphs)
        for row in table.itertuples()
        if row.op_type != "Total" and row.occurrences_in_non_delegated_graphs > 0 and row.op_type != "getitem"
    }
    total = info.num_delegated_nodes + info.num_non_delegated_nodes
    record = {
        "delegated_subgraphs": info.num_delegated_subgraphs,
        "delegated_nodes": info.num_delegated_nodes,
        "non_delegated_nodes": info.num_non_delegated_nodes,
        "delegated_share": info.num_delegated_nodes / total if total else 0.0,
        "not_delegated_ops": not_delegated,
    }
    if not_delegated:  # what the operators outside the delegate cost, measured; the file is good whatever the profiler says
        try:
            record["outside_delegate"] = time_outside_delegate(path, tuple(example.shape))
        except UdaciSenseError as error:
            record["outside_delegate"] = {"error": str(error)}
    return record


def load_pte(kind: str, path: Path, threads: int | None) -> Runner:
    """The program's ``forward`` in the ExecuTorch runtime (Python bindings of the C++ runtime, XNNPACK inside)."""
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool
    from executorch.runtime import Runtime

    # The pool is process-wide, and resizing it after it has run deadlocks (seen here): size it only
    # in a fresh process, before anything executes. threads=None keeps the default (all cores).
    if threads and _threadpool_get_thread_count() != threads:
        with _quiet_stderr():
            _unsafe_reset_threadpool(threads)
    with _quiet_stderr():
        method = Runtime.get().load_program(path).load_method("forward")
    shape = tuple(method.metadata.input_tensor_meta(0).sizes())

    def predict(images: torch.Tensor) -> torch.Tensor:
        check_input(kind, images, shape)
        return method.execute([images.contiguous()])[0]

    return Runner(kind, predict, shape[0])


def preload_executorch() -> None:
    """Import the runtime's bindings without the exporter."""
    # The runtime's bindings import executorch.exir only for a warning class, and running the exporter package's
    # __init__ costs about 4 s per probe. Register the package unexecuted: its modules still load from their files.
    sys.modules.setdefault("executorch.exir", importlib.util.module_from_spec(importlib.util.find_spec("executorch.exir")))
    import executorch.extension.pybindings.portable_lib  # noqa: F401
    import executorch.runtime  # noqa: F401


# Runs in a fresh process (the thread pool is sized once, before anything runs): the program with ExecuTorch's own
# profiler on, ``runs`` executions (the caller drops the first fifth as warm-up), then its ETDump written to a file.
PROFILE_TIMEOUT_SECONDS = 120  # a child that hangs (a runtime deadlock) must not hang the export
_PROFILE_CHILD = r"""
import sys, torch
from udacisense.formats.executorch import preload_executorch
preload_executorch()
from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
from executorch.runtime import Runtime
path, shape, threads, runs, etdump = sys.argv[1], [int(side) for side in sys.argv[2].split(",")], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
_unsafe_reset_threadpool(threads)
program = Runtime.get().load_program(path, enable_etdump=True)
method = program.load_method("forward")
example = torch.randn(shape)
for _ in range(runs):
    method.execute([example])
program.write_etdump_result_to_file(etdump, etdump + ".debug")
"""


def time_outside_delegate(path: Path, input_shape: tuple[int, ...], threads: int = 1, runs: int = 50) -> dict[str, Any]:
    """Where a ``.pte``'s execution time goes, from ExecuTorch's profiler (ETDump) in a fresh process at ``threads``:
    the share of ``Method::execute`` spent in operators outside the XNNPACK delegate (ExecuTorch's own kernels), and
    each such kernel's median milliseconds. The first fifth of the runs are warm-up and not counted."""
    import statistics
    import subprocess
    import tempfile

    from executorch.devtools import Inspector

    with tempfile.TemporaryDirectory() as folder:
        etdump = Path(folder) / "profile.etdp"
        try:
            done = subprocess.run([sys.executable, "-c", _PROFILE_CHILD, str(path), ",".join(map(str, input_shape)), str(threads), str(runs),
                                   str(etdump)], capture_output=True, text=True, timeout=PROFILE_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise UdaciSenseError(f"profiling {path} in ExecuTorch took over {PROFILE_TIMEOUT_SECONDS} s") from None
        if done.returncode != 0 or not etdump.is_file():
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise UdaciSenseError(f"profiling {path} in ExecuTorch failed: {lines[-1][:200] if lines else 'no profile written'}")
        try:
            inspector = Inspector(etdump_path=str(etdump))
        except Exception as error:  # a profile this version cannot parse: the export itself is unaffected
            raise UdaciSenseError(f"ExecuTorch's profile of {path} could not be read: {type(error).__name__}: {error}") from None
    warmup = runs // 5
    execute, outside, kernels = [], [], {}
    for block in inspector.event_blocks:
        if block.name != "Execute":
            continue
        for event in block.events:
            if event.perf_data is None:
                continue
            samples = list(event.perf_data.raw)[warmup:]
            if not samples:
                continue
            if event.name == "Method::execute":
                execute += samples
            elif event.name == "OPERATOR_CALL":  # one non-delegated instruction: its kernel and the dispatch around it
                outside.append(samples)
            elif event.name.startswith("native_call_"):  # the kernel alone, inside its OPERATOR_CALL
                kernel = event.name.removeprefix("native_call_")
                kernels[kernel] = kernels.get(kernel, 0.0) + statistics.median(samples)
    if not execute:
        raise UdaciSenseError(f"ExecuTorch's profile of {path} holds no execution")
    outside_ms = sum(statistics.median(samples) for samples in outside)
    execute_ms = statistics.median(execute)
    return {"threads": threads, "runs": len(execute), "execute_ms": execute_ms, "outside_delegate_ms": outside_ms,
            "outside_delegate_share": outside_ms / execute_ms, "kernels_ms": dict(sorted(kernels.items(), key=lambda item: -item[1]))}


@contextlib.contextmanager
def _quiet_stderr():
    """ExecuTorch's cpuinfo prints probe noise to fd 2 on x86 hosts; keep the console readable."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


# ExecuTorch's Android (org.pytorch.executorch) and iOS (ExecuTorch Swift package) APIs: the one place app code calls them.
EXECUTORCH_APP = Snippet(
    name="ExecuTorch",
    package="executorch",
    android_dependency='// build.gradle: implementation("org.pytorch:executorch-android:{version}")',
    ios_dependency='// Swift Package: https://github.com/pytorch/executorch, products "executorch" and "backend_xnnpack" ({version})',
    java=AppCode(
        imports="import org.pytorch.executorch.EValue;\nimport org.pytorch.executorch.Module;\nimport org.pytorch.executorch.Tensor;",
        module_type="Module",
        load="Module.load({path})",
        forward="{module}.forward(EValue.from(Tensor.fromBlob({input}, {shape})))[0].toTensor().getDataAsFloatArray()",
        release="{module}.destroy()",
    ),
    kotlin=AppCode(
        imports="import org.pytorch.executorch.EValue\nimport org.pytorch.executorch.Module\nimport org.pytorch.executorch.Tensor",
        module_type="Module",
        load="Module.load({path})",
        forward="{module}.forward(EValue.from(Tensor.fromBlob({input}, {shape})))[0].toTensor().dataAsFloatArray",
        release="{module}.destroy()",
    ),
    swift=AppCode(
        imports="import ExecuTorch",
        module_type="Module",
        load="Module(filePath: {path})",
        forward="try {module}.forward(Tensor<Float>({input}, shape: {shape}))[0].tensor(Float.self).scalars()",
    ),
)

EXECUTORCH = Runtime("executorch", load_pte, preload_executorch)
PTE = ExportFormat("pte", "ExecuTorch fp32 (XNNPACK)", "model_fp32.pte", fp32_exporter(export_pte), EXECUTORCH, "pte", backend="xnnpack", snippet=EXECUTORCH_APP)
PTE_INT8 = ExportFormat("pte-int8", "ExecuTorch int8 (XNNPACK)", "model_int8.pte", int8_exporter(export_pte), EXECUTORCH, "pte", quantized=True, backend="xnnpack",
                        snippet=EXECUTORCH_APP)
