"""What an export format is, and the registry of them: ``FORMATS.get(name).export(model, example, folder, calibration)``.

Each :class:`ExportFormat` says everything the rest of the toolkit needs to know about a format: its file name, how to
write it, the :class:`Runtime` that loads and runs it here (None: it cannot run on this machine), the fp32 format an
int8 artifact is compared with, whether exporting quantizes the model, and the phone runtime's app code
(:class:`Snippet`) when the generated snippets and selectors load it on a phone. One file per format family
(``executorch``, ``onnx``, ``litert``, ``torchscript``, ``coreml``, ``web``) declares its formats; :mod:`udacisense.formats` registers them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from udacisense.errors import ExportFailed, UdaciSenseError, first_line
from udacisense.registry import Registry

Calibration = Callable[[], list[torch.Tensor]]
Exporter = Callable[[nn.Module, torch.Tensor, Path, Calibration], dict[str, Any]]


def fp32_exporter(export: Callable[[nn.Module, torch.Tensor, Path], dict[str, Any]]) -> Exporter:
    """A format's :data:`Exporter` from a family's ``export(model, example, path)``: no calibration."""
    return lambda model, example, path, calibration: export(model, example, path)


def int8_exporter(export: Callable[[nn.Module, torch.Tensor, Path, list[torch.Tensor]], dict[str, Any]]) -> Exporter:
    """A format's :data:`Exporter` from a family's ``export(model, example, path, calibration_batches)``."""
    return lambda model, example, path, calibration: export(model, example, path, calibration())


@dataclass
class Runner:
    """A loaded artifact: ``predict`` takes a float32 (N, C, H, W) batch of ``batch_size`` (None: any)."""

    kind: str
    predict: Callable[[torch.Tensor], torch.Tensor]
    batch_size: int | None


@dataclass(frozen=True)
class Runtime:
    """What runs a format's artifacts on this machine: ``load(kind, path, threads)`` opens one as a :class:`Runner`
    with ``threads`` intra-op threads (None: the runtime's default); ``preload()`` imports the runtime's libraries, so
    that a memory baseline taken after it counts the model, not the imports."""

    name: str
    load: Callable[[str, Path, int | None], Runner]
    preload: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class AppCode:
    """How app code in one language uses a phone runtime; the generated snippets and selectors are written around
    these pieces. ``load`` is an expression opening the model file at ``{path}``; ``forward`` an expression giving the
    logits (a float array) of ``{module}`` on the float array ``{input}`` of shape ``{shape}``; ``release`` frees
    ``{module}`` ("" where the language frees it)."""

    imports: str
    module_type: str
    load: str
    forward: str
    release: str = ""


@dataclass(frozen=True)
class Snippet:
    """A phone runtime's app code: its ``name``, the Python ``package`` whose version the app's runtime should match,
    how Android and iOS apps add it (comment lines, ``{version}`` filled in), and its calls in each language."""

    name: str
    package: str
    android_dependency: str
    ios_dependency: str
    java: AppCode
    kotlin: AppCode
    swift: AppCode


@dataclass(frozen=True)
class ExportFormat:
    """One mobile format: ``name`` is what recipes and ``--formats`` say."""

    name: str
    title: str
    file_name: str
    exporter: Exporter | None  # None: no model file of its own, but a wrapper the bundle builds around one (``web``)
    runtime: Runtime | None  # None: it cannot run on this machine (converted, not run)
    reference: str | None
    quantized: bool = False
    backend: str = ""  # what executes it on the phone (a bundle's variants record it)
    snippet: Snippet | None = None  # the app code that loads it on a phone; None: the generated app code does not

    @property
    def runs_here(self) -> bool:
        """Whether this machine has the runtime to validate and time the artifact."""
        return self.runtime is not None

    @property
    def phone_runtime(self) -> bool:
        """Whether a phone runtime loads it from the app code this toolkit generates (snippets, on-device selectors)."""
        return self.snippet is not None

    def export(self, model: nn.Module, example: torch.Tensor, folder: Path, calibration: Calibration) -> tuple[Path, dict[str, Any]]:
        """Write the artifact into ``folder``; ``calibration()`` yields batches of ``example``'s shape (int8 formats)."""
        if self.exporter is None:
            raise UdaciSenseError(f"{self.name} is made around a bundle's model file: ask for it in a bundle (udacisense export --formats onnx,{self.name})")
        path = folder / self.file_name
        with converter_errors(self.name):
            return path, self.exporter(model, example, path, calibration)


@contextlib.contextmanager
def converter_errors(format_name: str) -> Iterator[None]:
    """A converter's exception inside the block becomes one line, :class:`ExportFailed`, in the converter's own words,
    whose first line names the operator it has no lowering for (e.g. ``Missing out variants: {'my_ops::twice'}``)."""
    try:
        yield
    except (UdaciSenseError, MemoryError, OSError):
        raise
    except Exception as error:
        raise ExportFailed(f"{format_name}: {type(error).__name__}: {first_line(error, 300, 'no message')}") from error


FORMATS: Registry[ExportFormat] = Registry("export format")

DEFAULT_FORMATS = ("pte", "pte-int8", "onnx", "onnx-int8", "ptl")


def register_format(export_format: ExportFormat) -> ExportFormat:
    """Add a format to the registry under its own name."""
    return FORMATS.register(export_format.name, export_format)


def parse_formats(text: str) -> list[str]:
    """'pte,pte-int8,onnx' -> ['pte', 'pte-int8', 'onnx'], rejecting unknown names with a suggestion."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UdaciSenseError(f"no export format given; choose from {', '.join(FORMATS)}")
    for name in names:
        FORMATS.get(name)
    return names


def phone_formats() -> list[str]:
    """The registered formats a phone runtime loads from the generated app code, in registration order."""
    return [name for name, export_format in FORMATS.items() if export_format.phone_runtime]


def check_input(kind: str, images: torch.Tensor, expected: tuple[int, ...]) -> None:
    """Raise one line when ``images`` is not float32 of the ``expected`` shape (-1: any size)."""
    if images.dtype != torch.float32:
        raise UdaciSenseError(f"{kind} artifact takes float32 input, got {images.dtype}")
    matches = images.ndim == len(expected) and all(e in (-1, a) for e, a in zip(expected, images.shape))
    if not matches:
        wanted = ", ".join("N" if e == -1 else str(e) for e in expected)
        raise UdaciSenseError(f"{kind} artifact expects input ({wanted}) but got {tuple(images.shape)}")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op PyTorch threads (None: as many as now)."""
    previous = torch.get_num_threads()
    threads = threads or previous
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def describe_not_delegated(info: dict[str, Any]) -> str:
    """From an export's record: 'not delegated: native_layer_norm x21, expand_copy x36: 19.5% of the time (1 thread)',
    or '' when the backend took every operator (or the format has no backend)."""
    if not info.get("not_delegated_ops"):
        return ""
    ops = ", ".join(f"{name.removeprefix('aten_').removesuffix('_default')} x{count}" for name, count in info["not_delegated_ops"].items())
    timing = info.get("outside_delegate") or {}
    share = f": {100 * timing['outside_delegate_share']:.1f}% of the time ({timing['threads']} thread)" if "threads" in timing else ""
    return f"not delegated: {ops}{share}"
