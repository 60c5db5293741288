"""Measurements of a model: the one place report numbers come from.

``profile_model`` returns parameters (total, non-zero), serialized and gzip sizes, MACs at the
input size, batch-1 CPU latency (1 thread and all threads), peak inference memory of a fresh
process, and a per-layer table of parameters and MACs.
"""

from __future__ import annotations

import gzip
import io
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from udacisense.errors import UdaciSenseError


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total and non-zero parameter counts (non-zero shows what unstructured sparsity removed)."""
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p).item()) for p in model.parameters())
    return {"total": total, "nonzero": nonzero}


def serialized_size(model: nn.Module) -> dict[str, int]:
    """Bytes of the saved state dict, and of its tensors' bytes gzip-compressed (zeros from pruning compress well).
    Not the gzip of the saved file: torch.save writes a random serialization id into it, and the same weights would
    then compress to a few bytes more or less from one save to the next (found by tests/test_faults.py)."""
    buffer = io.BytesIO()
    state = model.state_dict()
    torch.save(state, buffer)
    # by name: pruning re-registers a weight after its bias, and the same weights must give the same figure
    tensors = b"".join(_tensor_bytes(state[name]) for name in sorted(state))
    return {"bytes": len(buffer.getvalue()), "gzip_bytes": len(gzip.compress(tensors, compresslevel=6, mtime=0))}


def _tensor_bytes(value: Any) -> bytes:
    """The raw bytes of a state-dict entry: a tensor (a quantized one as its integers), or the tensors of a tuple (a
    dynamic int8 Linear keeps its weight and bias packed in one); other entries (its dtype) hold no weights."""
    if isinstance(value, torch.Tensor):
        tensor = value.int_repr() if value.is_quantized else value
        return tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    if isinstance(value, (tuple, list)):
        return b"".join(_tensor_bytes(item) for item in value)
    return b""


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, dict[str, int]]:
    """Multiply-accumulates of one forward pass at ``input_shape`` (with batch), total and per leaf module.

    ``torch.utils.flop_counter`` counts 2 FLOPs per multiply-accumulate; we report MACs.
    """
    model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(input_shape))
    root = type(model).__name__
    per_module = {}
    for name, counts in counter.get_flop_counts().items():
        if name.startswith(root + "."):
            per_module[name[len(root) + 1 :]] = sum(counts.values()) // 2
    return counter.get_total_flops() // 2, per_module


def measure_latency(
    model: nn.Module, input_shape: tuple[int, ...], threads: int, warmup: int = 20, runs: int = 200
) -> dict[str, float]:
    """Wall-clock milliseconds per forward pass with ``threads`` intra-op threads: p50, p90, mean."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model.eval()
        example = torch.randn(input_shape)
        timings = []
        with torch.inference_mode():
            for index in range(warmup + runs):
                started = time.perf_counter()
                model(example)
                if index >= warmup:
                    timings.append((time.perf_counter() - started) * 1000)
    finally:
        torch.set_num_threads(previous)
    from udacisense.deploy.bench import summarize_timings

    return summarize_timings(timings) | {"threads": threads}


def measure_peak_memory(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Peak resident memory of a fresh process that loads ``model`` (traced to TorchScript) and runs it at batch 1."""
    from udacisense.deploy.bench import run_probe

    model.eval()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pt"
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # trace is deprecated but is the lean loader here
                traced = torch.jit.trace(model, torch.zeros(input_shape), check_trace=False)
            traced.save(str(path))
        except Exception as error:  # some user models cannot be traced; say so instead of guessing
            return {"error": f"tracing failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"}
        try:
            return run_probe("torchscript", path, input_shape, threads=1, warmup=0, runs=1)["memory"]
        except UdaciSenseError as error:  # a failed probe should not sink the rest of the profile
            return {"error": str(error)}


def layer_table(model: nn.Module, macs_per_module: dict[str, int]) -> list[dict[str, Any]]:
    """One row per leaf module that has parameters or MACs: name, type, parameters, MACs."""
    rows = []
    for name, module in model.named_modules():
        if not name or any(True for _ in module.children()):
            continue
        params = sum(p.numel() for p in module.parameters(recurse=False))
        macs = macs_per_module.get(name, 0)
        if params or macs:
            rows.append({"name": name, "type": type(module).__name__, "params": params, "macs": macs})
    return rows


def profile_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    warmup: int = 20,
    runs: int = 200,
    memory: bool = True,
    latency: bool = True,
) -> dict[str, Any]:
    """Every measurement of ``model`` at ``input_shape`` (batch included, normally 1).

    ``latency=False`` (or ``memory=False``) skips that in-process measurement, for callers that take it
    in a fresh process instead; the entry is then None.
    """
    model = model.eval().cpu()
    total_macs, macs_per_module = count_macs(model, input_shape)
    timings = None
    if latency:
        from udacisense.deploy.bench import thread_counts, thread_label

        timings = {thread_label(threads): measure_latency(model, input_shape, threads, warmup, runs) for threads in thread_counts()}
    return {
        "input_shape": list(input_shape),
        "parameters": count_parameters(model),
        "size": serialized_size(model),
        "macs": total_macs,
        "latency": timings,
        "memory": measure_peak_memory(model, input_shape) if memory else None,
        "layers": layer_table(model, macs_per_module),
        "torch_version": torch.__version__,
    }


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, its int8-relevant instruction sets, cores, GPU, Python and torch versions."""
    import platform

    cpu, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as handle:
            lines = handle.read().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
        flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    except OSError:
        pass
    return {
        "cpu": cpu,
        # int8 is faster than fp32 on x86 only with VNNI dot-product instructions: every latency carries these
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def format_profile(profile: dict[str, Any], top_layers: int = 12) -> str:
    """A readable summary plus the costliest layers by MACs."""
    params, size = profile["parameters"], profile["size"]
    lines = [
        f"input shape        {tuple(profile['input_shape'])}",
        f"parameters         {params['total']:,} ({params['nonzero']:,} non-zero)",
        f"file size          {size['bytes'] / 1e6:.2f} MB ({size['gzip_bytes'] / 1e6:.2f} MB gzip)",
        f"MACs               {profile['macs'] / 1e6:.2f} M",
    ]
    for label, timing in profile["latency"].items():
        lines.append(
            f"latency {label.replace('_', ' '):<10} p50 {timing['p50_ms']:.3f} ms, p90 {timing['p90_ms']:.3f} ms, "
            f"mean {timing['mean_ms']:.3f} ms"
        )
    memory = profile.get("memory")
    if memory:
        lines.append(
            f"peak memory        {memory['model_bytes'] / 1e6:.1f} MB above torch ({memory['peak_rss_bytes'] / 1e6:.0f} MB process)"
            if "model_bytes" in memory
            else f"peak memory        not measured: {memory['error']}"
        )
    layers = sorted(profile["layers"], key=lambda row: row["macs"], reverse=True)[:top_layers]
    total_macs = max(profile["macs"], 1)
    lines += ["", f"{'layer (top by MACs)':<40} {'type':<12} {'params':>10} {'MACs':>12} {'share':>6}"]
    for row in layers:
        lines.append(
            f"{row['name'][:40]:<40} {row['type'][:12]:<12} {row['params']:>10,} {row['macs']:>12,} "
            f"{100 * row['macs'] / total_macs:>5.1f}%"
        )
    return "\n".join(lines)
