"""Checkpoints: architecture spec + state dict + input contract, saved atomically, loaded with weights_only=True.

No module is ever pickled: a checkpoint rebuilds its model from the registry name and keyword
arguments it stores, so a checkpoint from an untrusted source cannot run code on load. Layer
widths are stored too (``structure``: plain integers per layer), so a channel-pruned model
is rebuilt from its registry architecture and then narrowed to the saved widths; low-rank
factorized layers are re-split from their saved ranks (``factorized``) the same way.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from udacisense.errors import UdaciSenseError
from udacisense.io import atomic_write

FORMAT = "udacisense-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, model: nn.Module, model_spec: dict[str, Any], contract: dict[str, Any], **extra: Any) -> Path:
    """Write ``model``'s weights with what is needed to rebuild and feed it; ``extra`` holds training state."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": {"name": model_spec["name"], "kwargs": dict(model_spec.get("kwargs", {}))},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "structure": layer_structure(model),
        "input": contract,
        **extra,
    }
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
        reason = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        raise UdaciSenseError(
            f"checkpoint {path} is corrupt or not loadable safely ({reason}); re-create it with 'udacisense train'"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UdaciSenseError(f"{path} is not a UdaciSense checkpoint (no '{FORMAT}' header); use a file written by udacisense")
    if payload.get("version", 0) > VERSION:
        raise UdaciSenseError(f"{path} was written by a newer udacisense (format {payload['version']}); upgrade the package")
    return payload


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint, in eval mode, and return it with the checkpoint payload."""
    from udacisense.models import create_model

    payload = load_checkpoint(path)
    model = create_model(payload["model"]["name"], **payload["model"]["kwargs"])
    if payload.get("factorized"):
        from udacisense.compress.lowrank import apply_factorization

        apply_factorization(model, payload["factorized"])
    try:
        apply_structure(model, payload.get("structure", {}), payload["state_dict"])
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise UdaciSenseError(f"checkpoint {path} does not match model '{payload['model']['name']}': {first}") from None
    return model.eval(), payload


# The attributes that define a layer's width; forward() of these layers reads nothing else.
_WIDTH_ATTRIBUTES: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.Linear: ("in_features", "out_features"),
    nn.modules.batchnorm._BatchNorm: ("num_features",),
    nn.GroupNorm: ("num_groups", "num_channels"),
    nn.LayerNorm: ("normalized_shape",),
    nn.PReLU: ("num_parameters",),
}


def layer_structure(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Width attributes of every layer that pruning can narrow: integers only, safe to load."""
    structure = {}
    for name, module in model.named_modules():
        for layer_type, attributes in _WIDTH_ATTRIBUTES.items():
            if isinstance(module, layer_type):
                structure[name] = {attribute: getattr(module, attribute) for attribute in attributes}
    return structure


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
