"""Atomic checkpoints that load with ``weights_only=True``.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only (RNG states are stored
as uint8 tensors), so loading it can never execute code.
"""

from __future__ import annotations

import os
import random
from typing import Any, Dict, Union

import numpy as np
import torch

from .._atomic import DAMAGED_FILE_ERRORS, atomic_path
from ..version import __version__

__all__ = ["DAMAGED_FILE_ERRORS", "get_rng_state", "load_checkpoint", "save_checkpoint", "set_rng_state"]



def save_checkpoint(path: Union[str, os.PathLike], state: Dict[str, Any]) -> None:
    """Write ``state`` atomically: a temp file in the same folder, then ``os.replace``."""
    with atomic_path(path) as tmp:
        torch.save(dict(state, dcwp_prune_version=__version__), tmp)


def load_checkpoint(path: Union[str, os.PathLike], map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no code runs)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    import pickle

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"checkpoint {path!r} was refused by the safe loader (torch.load weights_only=True): it was not "
                         "written by dcwp-prune; delete it to continue from the previous checkpoint") from None
    except DAMAGED_FILE_ERRORS as err:
        raise ValueError(f"checkpoint {path!r} is damaged ({type(err).__name__}); delete it to continue from the "
                         "previous checkpoint, or start the run again") from None


def get_rng_state() -> Dict[str, Any]:
    """Torch (CPU and CUDA), numpy and Python RNG states, as tensors."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [int(py[0]), list(py[1]), py[2] if py[2] is None else float(py[2])],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
