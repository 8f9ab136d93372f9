"""Files: the one atomic writer (a temporary file in the target's folder, then ``os.replace``) and
the errors a damaged file raises when read.

Readers see the old file or the new one, never half of one; a failed write leaves no temporary
file behind. Text, JSON, torch checkpoints, safetensors files and images all go through
:func:`atomic_path`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import threading
from typing import Any, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]

#: What ``torch.load(..., weights_only=True)`` raises on a truncated or foreign file (from the zip reader
#: or inside the weights-only unpickler); ``pickle.UnpicklingError`` is its refusal of a code-carrying pickle.
DAMAGED_FILE_ERRORS = (RuntimeError, EOFError, OSError, KeyError, IndexError, ValueError, TypeError)


#: The errors of a machine that cannot take the file: a full disk, a file-size limit, a full quota.
DISK_FULL_ERRNOS = tuple(getattr(errno, name) for name in ("ENOSPC", "EFBIG", "EDQUOT") if hasattr(errno, name))
_UMASK_LOCK = threading.Lock()


class DiskWriteError(OSError):
    """A file could not be written because the machine cannot take it (``no space left on device``,
    ``file too large``); the message names the file. Nothing half-written is left behind."""


def _umask() -> int:
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on failure it is removed.

    ``suffix`` keeps an extension a writer needs (matplotlib picks the format from it). The file gets
    the permissions a plain ``open`` would give it (``0666`` less the umask; ``mkstemp`` alone makes
    ``0600``). A full disk or a file-size limit raises :class:`DiskWriteError` naming ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=suffix)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in DISK_FULL_ERRNOS and not isinstance(err, DiskWriteError):
            raise DiskWriteError(err.errno, f"{os.strerror(err.errno).lower()} while writing {path!r}") from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step (Python's own write, so a full disk says so)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text(path: PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` in one step."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def write_json(path: PathLike, data: Any, indent: int | None = 1) -> None:
    write_text(path, json.dumps(data, indent=indent, sort_keys=True, default=str))
