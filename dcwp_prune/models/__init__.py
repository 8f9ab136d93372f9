"""Model factory: built-in CMNIST nets and every torchvision classification model, plus feature taps."""

from __future__ import annotations

import os
import warnings
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

from .._registry import Registry, unknown_name_message
from ..errors import InputError, UnknownNameError
from .builtin import CMNISTCNN, MLP

__all__ = [
    "FeatureTap",
    "classifier_of",
    "create_model",
    "list_models",
    "load_state_dict_checked",
    "read_state_dict",
    "register_model",
]

_BUILTIN: Registry[Callable[..., nn.Module]] = Registry("model")
_BUILTIN.register("cnn")(CMNISTCNN)
_BUILTIN.register("mlp")(MLP)


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a factory ``fn(num_classes=...) -> nn.Module`` under ``name`` (decorator).

    For the whole pipeline (``run_dcwp``, the CLI with ``--import``) the model must return one
    ``(batch, num_classes)`` logits tensor in training mode too, and its classifier must be the last
    ``nn.Linear`` it defines (its input is the contrastive feature); a run checks both before training.

    Example:
        >>> from torch import nn
        >>> @register_model("tiny-mlp-example")
        ... class TinyMLP(nn.Module):
        ...     def __init__(self, num_classes=10):
        ...         super().__init__()
        ...         self.body, self.head = nn.Sequential(nn.Flatten(), nn.Linear(12, 8)), nn.Linear(8, num_classes)
        ...     def forward(self, x):
        ...         return self.head(self.body(x))
        >>> create_model("tiny-mlp-example", num_classes=3).head.out_features
        3
    """
    return _BUILTIN.register(name)


def _torchvision_names() -> List[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def list_models() -> List[str]:
    """Built-in names plus every torchvision classification model."""
    return sorted(set(_BUILTIN.names()) | set(_torchvision_names()))


def classifier_of(model: nn.Module) -> nn.Linear:
    """The final ``nn.Linear`` (the classifier); its input is the penultimate feature."""
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise InputError(f"{type(model).__name__} has no nn.Linear classifier; DCWP needs one for its features")
    return last


def _replace_classifier(model: nn.Module, num_classes: int) -> None:
    head = classifier_of(model)
    if head.out_features == num_classes:
        return
    for name, m in model.named_modules():
        if m is head:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, nn.Linear(head.in_features, num_classes, bias=head.bias is not None))
            return


def read_state_dict(path: str) -> Dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only=True``; a ``{"model": ...}``
    checkpoint is unwrapped). Loading never runs code.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is a pickle of code (refused), truncated, or holds no state dict; the
            message names the file and how to write one that loads.
    """
    import pickle

    from .._atomic import DAMAGED_FILE_ERRORS

    if os.path.isdir(path):
        raise InputError(f"weights file {path!r} is a folder; pass the state-dict file (.pt, .pth or .safetensors)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path!r} does not exist")
    fix = "save it with torch.save(model.state_dict(), path) or safetensors.torch.save_file"
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as err:
            raise InputError(
                f"{path!r} is not a readable safetensors file ({err}); it may be truncated: {fix}"
            ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(
            f"{path!r} was refused by the safe loader (torch.load weights_only=True: {_first_line(err)}); "
            f"it holds more than tensors (a pickled model or objects), which would run code: {fix}"
        ) from None
    except DAMAGED_FILE_ERRORS as err:
        raise InputError(
            f"{path!r} is not a readable torch file ({_first_line(err)}); it may be truncated or not a "
            f"torch file: {fix}"
        ) from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"{path!r} does not hold a state dict (a dict of tensors): {fix}")
    return state


def _first_line(err: BaseException) -> str:
    """The first sentence of an exception's message, without terminal colour codes."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    text = text.splitlines()[0] if text else type(err).__name__
    return text.split(". ")[0][:160] or type(err).__name__


def load_state_dict_checked(model: nn.Module, state: Dict[str, Tensor], source: str) -> None:
    """``model.load_state_dict(state)`` with an error that names the first mismatching keys and shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{label} {items[:3]}{' ...' if len(items) > 3 else ''}"
            for label, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape differs (file vs model)", shapes),
            )
            if items
        ]
        raise InputError(
            f"{source!r} does not fit a {type(model).__name__}: {'; '.join(parts)}; is it a state dict of "
            "this architecture (--arch / MODEL) and class count?"
        )
    model.load_state_dict(state)


def _load_file(model: nn.Module, path: str) -> None:
    state = read_state_dict(path)
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if skipped:
        warnings.warn(
            f"{path}: not loading {skipped} (shape differs, e.g. a classifier for another class count)", stacklevel=2
        )
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    missing = [k for k in missing if k not in skipped]
    if missing or unexpected:
        raise InputError(f"{path!r} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


#: Builder options for torchvision models trained from scratch. GoogLeNet and Inception v3 default to
#: auxiliary classifiers, whose training-mode forward returns a tuple of logits; DCWP's stages train
#: one logits tensor (as the pretrained builds of both do, which drop the auxiliary heads).
_SCRATCH_OPTIONS: Dict[str, Dict[str, object]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


def create_model(name: str, num_classes: int, weights: Optional[str] = None) -> nn.Module:
    """Build ``name`` with a ``num_classes``-way head.

    Args:
        name: ``cnn``, ``mlp``, a registered name, or any torchvision classification model.
        num_classes: the number of target classes.
        weights: a torchvision weights name (``DEFAULT``, ``IMAGENET1K_V1``; offline it must be in the
            torch hub cache) or a local state-dict file (loaded with ``weights_only=True``).

    GoogLeNet and Inception v3 are built without their auxiliary classifiers (one logits output).

    Raises:
        KeyError: unknown model name (the message lists close matches).
    """
    is_file = weights is not None and (
        os.path.sep in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors"))
    )
    if name in _BUILTIN:
        if weights is not None and not is_file:
            raise InputError(f"built-in model {name!r} has no named weights; pass a state-dict file instead")
        model = _BUILTIN.get(name)(num_classes=num_classes)
    else:
        import torchvision

        if name not in _torchvision_names():
            raise UnknownNameError(unknown_name_message("model", name, list_models(), listing="--list-models"))
        if weights is None or is_file:
            model = torchvision.models.get_model(name, num_classes=num_classes, **_SCRATCH_OPTIONS.get(name, {}))
        else:
            try:
                model = torchvision.models.get_model(name, weights=weights)
            except (OSError, RuntimeError) as err:  # no network and nothing cached
                raise FileNotFoundError(
                    f"could not load torchvision weights {weights!r} for {name} ({err}); offline, put the file in "
                    f"the torch hub cache ({torch.hub.get_dir()}/checkpoints) or pass a local file"
                ) from None
            _replace_classifier(model, num_classes)
    if is_file:
        _load_file(model, weights)  # type: ignore[arg-type]
    return model


class FeatureTap:
    """Captures the input of the classifier (the penultimate feature) on every forward pass.

    Example:
        >>> model = create_model("mlp", 10)
        >>> with FeatureTap(model) as tap:
        ...     _ = model(torch.zeros(2, 3, 28, 28))
        >>> tuple(tap.features.shape)
        (2, 100)
    """

    def __init__(self, model: nn.Module) -> None:
        self.head = classifier_of(model)
        self.features: Optional[Tensor] = None
        self._handle = None

    def _hook(self, module: nn.Module, inputs: tuple) -> None:
        self.features = torch.flatten(inputs[0], 1)

    def __enter__(self) -> "FeatureTap":
        self._handle = self.head.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle = None
