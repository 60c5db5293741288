"""ExecuTorch ``.pte`` lowered to the XNNPACK delegate, fp32 or int8 (PT2E)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn as nn

from udacisense.compress.quantize import quantize_pt2e_static
from udacisense.io import atomic_write


def export_pte(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    calibration_batches: Iterable[torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Write ``model`` as an XNNPACK-lowered ``.pte``; int8 when calibration batches are given.

    Returns what was delegated: XNNPACK runs delegated nodes with its optimized kernels, the rest
    falls back to ExecuTorch's portable kernels, which can be many times slower.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    # graphs from torch.export (e.g. a saved int8 program) are already in inference form and refuse .eval()
    source = model if isinstance(model, torch.fx.GraphModule) else model.eval()
    if calibration_batches is not None:
        source = quantize_pt2e_static(model, example, calibration_batches)
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
    return {
        "delegated_subgraphs": info.num_delegated_subgraphs,
        "delegated_nodes": info.num_delegated_nodes,
        "non_delegated_nodes": info.num_non_delegated_nodes,
        "delegated_share": info.num_delegated_nodes / total if total else 0.0,
        "not_delegated_ops": not_delegated,
    }
