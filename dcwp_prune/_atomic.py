"""Files: the one atomic writer (a temporary file in the target's folder, then ``os.replace``) and
the errors a damaged file raises when read.

Readers see the old file or the new one, never half of one; a failed write leaves no temporary
file behind. Text, JSON, torch checkpoints, safetensors files and images all go through
:func:`atomic_path`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]

#: What ``torch.load(..., weights_only=True)`` raises on a truncated or foreign file (from the zip reader
#: or inside the weights-only unpickler); ``pickle.UnpicklingError`` is its refusal of a code-carrying pickle.
DAMAGED_FILE_ERRORS = (RuntimeError, EOFError, OSError, KeyError, IndexError, ValueError, TypeError)


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on failure it is removed.

    ``suffix`` keeps an extension a writer needs (matplotlib picks the format from it).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` in one step."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def write_json(path: PathLike, data: Any, indent: int | None = 1) -> None:
    write_text(path, json.dumps(data, indent=indent, sort_keys=True, default=str))
