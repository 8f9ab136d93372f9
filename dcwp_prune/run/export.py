"""Save and rebuild pruned models without pickles: safetensors weights plus JSON metadata.

Unstructured: a plain state dict whose pruned weights are zeros (``prune.remove`` applied), loadable
into a fresh model. Structured: the smaller state dict plus the Torch-Pruning history that shrinks a
freshly built model to the same shapes before the weights are loaded.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from .._atomic import write_bytes, write_json
from ..errors import UnknownNameError
from ..models import create_model

__all__ = ["load_pruned_model", "plain_state_dict", "require_registered", "save_pruned_model"]


def plain_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The state dict with every ``torch.nn.utils.prune`` reparametrization made permanent.

    ``<name>_orig * <name>_mask`` becomes ``<name>`` (zeros kept); the model itself is not changed.
    """
    state = model.state_dict()
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("_orig") and f"{key[:-5]}_mask" in state:
            out[key[:-5]] = (value * state[f"{key[:-5]}_mask"]).detach()
        elif key.endswith("_mask") and f"{key[:-5]}_orig" in state:
            continue
        else:
            out[key] = value.detach()
    return out


def save_pruned_model(
    folder: str,
    model: nn.Module,
    *,
    arch: str,
    num_classes: int,
    input_shape: Sequence[int],
    history: Optional[list] = None,
    extra: Optional[Dict[str, Any]] = None,
) -> None:
    """Write ``model.safetensors`` and ``model.json`` (and ``pruning_history.json`` when structured)."""
    from safetensors.torch import save

    state = {k: v.contiguous().cpu() for k, v in plain_state_dict(model).items()}
    write_bytes(os.path.join(folder, "model.safetensors"), save(state))
    meta = {
        "arch": arch,
        "num_classes": num_classes,
        "input_shape": list(input_shape),
        "structured": history is not None,
        **(extra or {}),
    }
    if history is not None:
        from ..adapters.structured import save_history

        save_history(os.path.join(folder, "pruning_history.json"), history)
    write_json(os.path.join(folder, "model.json"), meta)


def require_registered(folder: str, arch: str, dataset: Optional[str] = None) -> None:
    """Refuse a run folder whose model (or dataset) is not registered in this process, saying how to fix it."""
    from ..data import list_datasets
    from ..models import list_models

    for kind, name, known in (("model", arch, list_models()), ("dataset", dataset, list_datasets())):
        if name is not None and name not in known:
            raise UnknownNameError(
                f"{folder!r} was made with the {kind} {name!r}, which is not registered in this "
                "process: if a module of yours registers it, pass --import MODULE (from Python: "
                "import that module first)"
            )


def load_pruned_model(folder: str, map_location: str = "cpu") -> nn.Module:
    """Rebuild the model saved by :func:`save_pruned_model` (no pickle is read)."""
    from safetensors.torch import load_file

    meta_path = os.path.join(folder, "model.json")
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"{folder!r} holds no saved model (model.json is missing)")
    with open(meta_path) as f:
        meta = json.load(f)
    require_registered(folder, meta["arch"])
    model = create_model(meta["arch"], meta["num_classes"])
    if meta.get("structured"):
        from ..adapters.structured import load_pruning_history, read_history

        example = torch.zeros(1, *meta["input_shape"])
        load_pruning_history(model, read_history(os.path.join(folder, "pruning_history.json")), example)
    model.load_state_dict(load_file(os.path.join(folder, "model.safetensors"), device=map_location))
    return model
