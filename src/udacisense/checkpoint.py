"""Checkpoints: architecture spec + state dict + input contract, saved atomically, loaded with weights_only=True.

No module is ever pickled: a checkpoint rebuilds its model from the registry name and keyword
arguments it stores. A user's model is imported from the file or module the checkpoint names (its
``path/to/file.py:callable`` name, or the ``source`` of a model registered outside the package), so
load only checkpoints you trust, as you would run only code you trust. Every
layer's type (``layers``) and the attributes that shape it (``structure``: plain integers per
layer) are stored too, so a compressed model rebuilds from its registry architecture whatever the
technique did: layers a stage swapped in (a low-rank pair of Linear layers, say) are built from a
short list of plain torch layers, then every layer is narrowed to its saved widths (channel
pruning). No technique needs code here.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from udacisense.errors import UdaciSenseError, first_line
from udacisense.io import atomic_write

FORMAT = "udacisense-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, model: nn.Module, model_spec: dict[str, Any], contract: dict[str, Any], **extra: Any) -> Path:
    """Write ``model``'s weights with what is needed to rebuild and feed it; ``extra`` holds training state."""
    from udacisense.models import MODEL_SOURCES

    source = MODEL_SOURCES.get(model_spec["name"]) or model_spec.get("source")  # a model registered outside the package
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": {"name": model_spec["name"], "kwargs": dict(model_spec.get("kwargs", {}))} | ({"source": source} if source else {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "layers": {name: type(module).__name__ for name, module in model.named_modules()},
        "structure": layer_structure(model),
        "input": contract,
        **extra,
    }
    return write_checkpoint_payload(path, payload)


def write_checkpoint_payload(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a checkpoint's payload (as :func:`load_checkpoint` returns it) atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely; a missing, corrupt or foreign file is a one-line :class:`UdaciSenseError`."""
    path = Path(path)
    if not path.is_file():
        raise UdaciSenseError(f"checkpoint {path} does not exist; train one with 'udacisense train' or check the path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises a zoo of types for damaged zip/pickle data
        raise UdaciSenseError(
            f"checkpoint {path} is corrupt or not loadable safely ({first_line(error, 120)}); re-create it with 'udacisense train'"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UdaciSenseError(f"{path} is not a UdaciSense checkpoint (no '{FORMAT}' header); use a file written by udacisense")
    if payload.get("version", 0) > VERSION:
        raise UdaciSenseError(f"{path} was written by a newer udacisense (format {payload['version']}); upgrade the package")
    return payload


def training_data(checkpoint: str | Path) -> dict[str, Any]:
    """The data options a checkpoint was trained with: its data set's name (from its input contract) and, for a
    ``udacisense train`` checkpoint, the root and validation split from the ``config.yaml`` beside it. Compressing on
    the same root and split keeps its validation images out of every fine-tune."""
    import yaml

    data = {"name": load_checkpoint(checkpoint)["input"]["dataset"]}
    trained_with = Path(checkpoint).parent / "config.yaml"
    if not trained_with.is_file():
        return data
    saved = (yaml.safe_load(trained_with.read_text()) or {}).get("data") or {}
    return data | {key: saved[key] for key in ("name", "root", "val_fraction", "split_seed") if saved.get(key) is not None}


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint, in eval mode, and return it with the checkpoint payload."""
    from udacisense.models import create_model

    payload = load_checkpoint(path)
    model = create_model(payload["model"]["name"], payload["model"].get("source"), **payload["model"]["kwargs"])
    try:
        rebuild_layers(model, payload.get("layers", {}), payload.get("structure", {}), payload["state_dict"])
        apply_structure(model, payload.get("structure", {}), payload["state_dict"])
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise UdaciSenseError(f"checkpoint {path} does not match model '{payload['model']['name']}': {first_line(error)}") from None
    return model.eval(), payload


# The attributes that define a layer's width; forward() of these layers reads nothing else.
_WIDTH_ATTRIBUTES: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Conv2d: ("in_channels", "out_channels", "groups", "kernel_size", "stride", "padding", "dilation"),
    nn.Linear: ("in_features", "out_features"),
    nn.modules.batchnorm._BatchNorm: ("num_features",),
    nn.GroupNorm: ("num_groups", "num_channels"),
    nn.LayerNorm: ("normalized_shape",),
    nn.PReLU: ("num_parameters",),
}


def tensors_digest(tensors: Iterable[torch.Tensor]) -> str:
    """A fingerprint of tensors' shapes, dtypes and values (a model's weights, a batch of images)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def layer_structure(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Width attributes of every layer that pruning can narrow: integers only, safe to load."""
    structure = {}
    for name, module in model.named_modules():
        for layer_type, attributes in _WIDTH_ATTRIBUTES.items():
            if isinstance(module, layer_type):
                structure[name] = {attribute: getattr(module, attribute) for attribute in attributes}
    return structure


# Layers a checkpoint may build in place of the architecture's own, from their saved attributes: plain torch
# layers only, so that loading never runs code named by the file.
_BUILDABLE: dict[str, Callable[[dict[str, Any], bool], nn.Module]] = {
    "Sequential": lambda attributes, bias: nn.Sequential(),
    "Identity": lambda attributes, bias: nn.Identity(),
    "ReLU": lambda attributes, bias: nn.ReLU(),
    "Hardswish": lambda attributes, bias: nn.Hardswish(),
    "Linear": lambda attributes, bias: nn.Linear(attributes["in_features"], attributes["out_features"], bias=bias),
    "Conv2d": lambda attributes, bias: nn.Conv2d(
        attributes["in_channels"], attributes["out_channels"], tuple(attributes["kernel_size"]), tuple(attributes["stride"]),
        attributes["padding"] if isinstance(attributes["padding"], str) else tuple(attributes["padding"]),
        tuple(attributes["dilation"]), attributes["groups"], bias=bias),
    "BatchNorm2d": lambda attributes, bias: nn.BatchNorm2d(attributes["num_features"]),
}


def rebuild_layers(model: nn.Module, layers: dict[str, str], structure: dict[str, dict[str, Any]],
                   state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Put in place every saved layer whose type differs from ``model``'s (parents before children, as saved)."""
    for name, type_name in layers.items():
        try:
            current = model.get_submodule(name)
        except AttributeError:
            current = None
        if current is not None and type(current).__name__ == type_name:
            continue
        build = _BUILDABLE.get(type_name)
        if build is None or (type_name in ("Linear", "Conv2d") and name not in structure):
            raise RuntimeError(f"saved layer '{name}' is a {type_name}, which udacisense cannot rebuild from plain torch layers")
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, build(structure.get(name, {}), f"{name}.bias" in state_dict))
    return model


def apply_structure(model: nn.Module, structure: dict[str, dict[str, Any]], state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Narrow ``model``'s layers to the saved widths so that ``state_dict`` fits (no-op for unpruned models)."""
    modules = dict(model.named_modules())
    for name, attributes in structure.items():
        module = modules.get(name)
        if module is None:
            raise RuntimeError(f"saved layer '{name}' is not in it")
        for attribute, value in attributes.items():
            setattr(module, attribute, tuple(value) if isinstance(value, list) else value)
        prefix = f"{name}." if name else ""
        for tensor_name, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            saved = state_dict.get(prefix + tensor_name)
            if tensor is not None and saved is not None and saved.shape != tensor.shape:
                replacement = torch.empty_like(saved, dtype=tensor.dtype)
                if isinstance(tensor, nn.Parameter):
                    setattr(module, tensor_name, nn.Parameter(replacement, requires_grad=tensor.requires_grad))
                else:
                    module.register_buffer(tensor_name, replacement)
    return model


def check_input_shape(images: torch.Tensor, contract: dict[str, Any]) -> None:
    """Raise a clear error when a batch does not match the (C, H, W) a model was trained on."""
    expected = tuple(contract["shape"][1:])
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise UdaciSenseError(
            f"input of shape {tuple(images.shape)} does not match the model's (N, {', '.join(map(str, expected))}); "
            "use the same --channels and --image-size as in training"
        )
