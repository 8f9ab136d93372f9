"""One process at a time in a run folder: an OS-level lock held for the whole command.

The lock is ``filelock``'s (``fcntl.flock`` on Linux and macOS, ``msvcrt`` on Windows): the operating
system releases it when the process ends, however it ends, so a lock left by ``kill -9`` never
blocks the next run. It lives next to the run folder (``.NAME.dcwp-lock``), not inside it, because
``--overwrite`` moves the folder itself; who holds it is written beside it (``.NAME.dcwp-lock.json``:
pid, host, command, start time) so that a refused command can name the holder.

Nested acquisitions in one process (``run_dcwp`` inside the CLI, which then writes the report)
share the one lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from typing import Any, Dict, Iterator, Tuple

from .._atomic import write_json
from .run_folder import RunFolderError

__all__ = ["RunLockedError", "lock_paths", "run_lock"]

#: realpath of a locked folder -> [the lock, nesting depth], for this process.
_HELD: Dict[str, list] = {}


class RunLockedError(RunFolderError):
    """Another process is running in (or writing to) the same run folder."""


def lock_paths(out: str) -> Tuple[str, str]:
    """``(lock file, holder file)`` of run folder ``out``: next to it, or inside it when only it is writable."""
    real = os.path.realpath(out)
    parent, name = os.path.dirname(real), os.path.basename(real)
    if os.path.isdir(real) and not os.access(parent, os.W_OK | os.X_OK):
        base = os.path.join(real, ".dcwp-lock")
    else:
        base = os.path.join(parent, f".{name}.dcwp-lock")
    return base, base + ".json"


def _holder(info_path: str) -> str:
    try:
        with open(info_path) as f:
            info = json.load(f)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["started"])))
        return f"process {info['pid']} on {info['host']} (started {started}: {info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def run_lock(out: str, *, enabled: bool = True, required: bool = True) -> Iterator[None]:
    """Hold the lock of run folder ``out`` for the ``with`` block; raise :class:`RunLockedError` at
    once (no waiting) when another process holds it. ``enabled=False`` (DDP ranks but the first) is a
    no-op; ``required=False`` goes on without the lock where no lock file can be created (a read-only
    folder, which nothing can change anyway)."""
    if not enabled:
        yield
        return
    from filelock import FileLock, Timeout

    real = os.path.realpath(out)
    if real in _HELD:  # nested in this process: the lock is ours already
        _HELD[real][1] += 1
        try:
            yield
        finally:
            _HELD[real][1] -= 1
        return
    lock_path, info_path = lock_paths(out)
    lock: Any = FileLock(lock_path, timeout=0)
    try:
        os.makedirs(os.path.dirname(lock_path), exist_ok=True)
        lock.acquire()
    except Timeout:
        raise RunLockedError(
            f"run folder {out!r} is in use by {_holder(info_path)}; wait for it to finish (or stop "
            "it), or choose another --out"
        ) from None
    except OSError:
        if required:
            raise
        yield
        return
    _HELD[real] = [lock, 1]
    try:
        with contextlib.suppress(OSError):  # the holder's name is a courtesy: the lock alone is the guard
            write_json(
                info_path,
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": time.time(),
                    "command": " ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]]),
                },
            )
        yield
    finally:
        del _HELD[real]
        with contextlib.suppress(OSError):
            os.unlink(info_path)
        lock.release()
