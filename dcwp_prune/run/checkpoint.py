"""Atomic, checksummed checkpoints that load with ``weights_only=True``.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only (RNG states are stored
as uint8 tensors), so loading it can never execute code. Each holds a SHA-256 digest of its own
content (every tensor's bytes, dtype and shape, every other value), checked on load: a file whose
bytes changed on disk is refused by name instead of resuming silently with other numbers.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from typing import Any, Dict, Union

import numpy as np
import torch

from .._atomic import DAMAGED_FILE_ERRORS, write_bytes
from ..errors import InputError
from ..version import __version__

__all__ = [
    "DAMAGED_FILE_ERRORS",
    "DamagedCheckpointError",
    "content_digest",
    "get_rng_state",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]

#: The key of a checkpoint's own digest (checkpoints of releases before it have none and load unchecked).
CHECKSUM_KEY = "dcwp_prune_sha256"


class DamagedCheckpointError(InputError):
    """A checkpoint cannot be read, or its content no longer matches its checksum."""


def _feed(h: "hashlib._Hash", value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        h.update(f"D{len(value)}".encode())
        for k in sorted(value, key=repr):
            h.update(repr(k).encode())
            _feed(h, value[k])
    elif isinstance(value, (list, tuple)):
        h.update(f"L{len(value)}".encode())
        for v in value:
            _feed(h, v)
    else:
        h.update(f"V{value!r}".encode())


def content_digest(state: Dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's content (its own checksum entry left out)."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != CHECKSUM_KEY})
    return h.hexdigest()


def save_checkpoint(path: Union[str, os.PathLike], state: Dict[str, Any]) -> None:
    """Write ``state`` atomically (a temp file in the same folder, then ``os.replace``) with its checksum.

    A full disk or a file-size limit raises :class:`~dcwp_prune._atomic.DiskWriteError` naming the file
    and leaves the previous checkpoint as it was.
    """
    state = dict(state, dcwp_prune_version=__version__)
    state[CHECKSUM_KEY] = content_digest(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Union[str, os.PathLike], map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no code runs) and check its checksum."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    import pickle

    fix = (
        "delete it to continue from the previous checkpoint (the stage it belongs to runs again), or start the "
        "run again"
    )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise DamagedCheckpointError(
            f"checkpoint {path!r} was refused by the safe loader (torch.load "
            f"weights_only=True): it was not written by dcwp-prune; {fix}"
        ) from None
    except DAMAGED_FILE_ERRORS as err:
        raise DamagedCheckpointError(f"checkpoint {path!r} is damaged ({type(err).__name__}); {fix}") from None
    if not isinstance(state, dict):
        raise DamagedCheckpointError(f"checkpoint {path!r} does not hold a dcwp-prune checkpoint; {fix}")
    saved = state.pop(CHECKSUM_KEY, None)
    if saved is not None and saved != content_digest(state):
        raise DamagedCheckpointError(
            f"checkpoint {path!r} is damaged: its content does not match the checksum "
            f"stored with it (bytes changed on disk); {fix}"
        )
    return state


def get_rng_state() -> Dict[str, Any]:
    """Torch (CPU and CUDA), numpy and Python RNG states, as tensors."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [int(py[0]), list(py[1]), py[2] if py[2] is None else float(py[2])],
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
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
