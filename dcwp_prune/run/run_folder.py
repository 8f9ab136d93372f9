"""The run folder's life cycle: checked before anything is loaded, created only after validation,
an old run replaced only once the new one has its first checkpoint, and nothing left behind by a
run that failed before it saved anything.

Modes, decided by :meth:`RunFolder.check` without touching the disk:

- ``new``: ``out`` does not exist or is empty;
- ``reuse``: ``out`` is a run folder that holds no finished stage (an earlier attempt failed before
  its first checkpoint); its files are cleared when the new run starts;
- ``resume``: continue the run in ``out`` (``config.json`` must exist);
- ``replace``: ``--overwrite`` of a dcwp-prune run folder; the old folder is moved aside (renamed
  next to ``out``) and deleted only when the new run writes its first checkpoint; if the new run
  fails before that, the old folder is put back exactly as it was.

A folder that is not a dcwp-prune run folder (no readable ``config.json``) is never overwritten.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
import warnings
from typing import Any, Dict, List, Optional

from ..errors import InputError

__all__ = [
    "RunFolder",
    "RunFolderError",
    "RunFolderExistsError",
    "NoRunError",
    "check_writable",
    "config_differences",
    "finished_parts",
    "read_saved_config",
]

#: Files whose presence means a stage finished (or the whole run did).
_FINISHED_FILES = ("mined.json", "scores.safetensors", "model.safetensors", "results.json")
#: Config keys that only say where and how a run executes: a resumed run may change them.
RUNTIME_KEYS = ("out", "resume", "overwrite", "device", "progress")


class RunFolderError(InputError):
    """``--out`` cannot be used as asked (the message says why and what to do)."""


class RunFolderExistsError(RunFolderError, FileExistsError):
    """``out`` holds a run and neither resume nor overwrite was asked for."""


class NoRunError(RunFolderError, FileNotFoundError):
    """``--resume`` of a folder that holds no run."""


def read_saved_config(out: str) -> Dict[str, Any]:
    """The ``config.json`` of run folder ``out`` as a dict (raises :class:`RunFolderError`)."""
    path = os.path.join(out, "config.json")
    if not os.path.isfile(path):
        raise NoRunError(f"cannot resume: {out!r} holds no run (no config.json); start it without --resume")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFolderError(
            f"cannot resume: {path!r} is not readable JSON ({err}); restore it or start a new run with another --out"
        ) from None
    if not isinstance(data, dict):
        raise RunFolderError(f"cannot resume: {path!r} does not hold a run config")
    return data


def finished_parts(out: str) -> List[str]:
    """Checkpoints and result files in ``out`` that a new run would destroy."""
    found = [f for f in _FINISHED_FILES if os.path.isfile(os.path.join(out, f))]
    ckpt = os.path.join(out, "checkpoints")
    if os.path.isdir(ckpt):
        found += sorted(os.path.join("checkpoints", f) for f in os.listdir(ckpt) if f.endswith(".pt"))
    return found


def _is_run_folder(out: str) -> bool:
    try:
        read_saved_config(out)
        return True
    except RunFolderError:
        return False


def check_writable(out: str) -> None:
    """``out`` (or its nearest existing ancestor) is a folder we can create files in."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunFolderError(f"--out {out!r} is a file, not a folder; choose another --out")
    if os.path.isdir(out) and not os.access(out, os.W_OK | os.X_OK):
        raise RunFolderError(f"--out {out!r} is not writable; choose a folder you can write to")
    probe = os.path.abspath(out)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise RunFolderError(
            f"--out {out!r} cannot be created: {probe!r} is a file, not a folder; choose another --out"
        )
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".dcwp-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise RunFolderError(
            f"--out {out!r} is not writable ({err.strerror or err}: {probe!r}); choose a folder you can write to"
        ) from None


def config_differences(saved: Dict[str, Any], given: Dict[str, Any], prefix: str = "") -> List[str]:
    """``["mask.lr: saved 0.1, given 0.5", ...]`` for every option (runtime keys aside) that differs."""
    out: List[str] = []
    for key in sorted(set(saved) | set(given)):
        if not prefix and key in RUNTIME_KEYS:
            continue
        a, b = saved.get(key), given.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif (list(a) if isinstance(a, tuple) else a) != (list(b) if isinstance(b, tuple) else b):
            out.append(f"{prefix}{key}: saved {a!r}, given {b!r}")
    return out


class RunFolder:
    """Checks and owns ``out`` for one run; only the main process touches the disk."""

    def __init__(self, out: str, *, resume: bool = False, overwrite: bool = False, is_main: bool = True) -> None:
        self.out = out
        self.resume = resume
        self.overwrite = overwrite
        self.is_main = is_main
        self.mode: Optional[str] = None
        self.committed = False
        self._created = False
        self._opened = False
        # a symlinked --out: the folder it points to is the run folder (moved aside, cleared, restored)
        self.real = os.path.realpath(out)
        self.aside = os.path.join(os.path.dirname(self.real), f".{os.path.basename(self.real)}.dcwp-replaced")

    # ----------------------------------------------------------------------------- checks only
    def check(self) -> str:
        """Decide the mode; raise :class:`RunFolderError` (nothing on disk changes) if ``out`` cannot be used.

        The one change it may make is the repair of an ``--overwrite`` that was killed half-way (see
        ``_recover_aside``): call it with the folder's lock held (:func:`~dcwp_prune.run.lock.run_lock`).
        """
        out = self.out
        check_writable(out)
        if os.path.exists(self.aside):
            self._recover_aside()
        if self.resume:
            read_saved_config(out)
            self.mode = "resume"
        elif not os.path.isdir(out) or not os.listdir(out):
            self.mode = "new"
        elif not _is_run_folder(out):
            what = "--overwrite refused" if self.overwrite else "refusing to write into it"
            raise RunFolderError(
                f"{out!r} exists and is not a dcwp-prune run folder (no readable config.json); {what} "
                "so that nothing in it is lost; choose another --out"
            )
        elif not finished_parts(out):
            self.mode = "reuse"  # an earlier attempt failed before its first checkpoint
        elif self.overwrite:
            self.mode = "replace"
        else:
            raise RunFolderExistsError(
                f"run folder {out!r} already exists; pass --resume to continue it or --overwrite to "
                "replace it (or choose another --out)"
            )
        return self.mode

    def _note(self, text: str) -> None:
        """What check() repaired (an interrupted --overwrite): a warning, which the CLI prints as it comes."""
        warnings.warn(text, RuntimeWarning, stacklevel=3)

    def _recover_aside(self) -> None:
        """An earlier ``--overwrite`` of this folder was killed (``kill -9``, power loss) with the old run
        moved aside. The caller holds the folder's lock, so no process is using either folder now.

        - ``out`` is missing, empty, or a run folder without a finished stage (the killed run's leftovers):
          the old run is put back, as the killed command would have done;
        - ``out`` holds a finished stage: the new run had committed and was deleting the old one; the
          deletion is finished;
        - ``out`` is something else: refused, with the commands that are right in that state.
        """
        out, real, aside = self.out, self.real, self.aside
        if not os.path.lexists(real) or (os.path.isdir(real) and not os.listdir(real)):
            state = "leftover" if os.path.isdir(real) else "missing"
        elif os.path.isdir(real) and _is_run_folder(real):
            state = "committed" if finished_parts(real) else "leftover"
        else:
            state = "other"
        if state in ("missing", "leftover"):
            if not self.is_main:
                return
            if os.path.isdir(real):
                shutil.rmtree(real)
            os.replace(aside, real)
            self._note(
                f"an earlier --overwrite of {out!r} was stopped before the new run saved anything: the run it "
                f"had moved aside ({aside}) is back in {out!r}"
            )
        elif state == "committed":
            if not self.is_main:
                return
            shutil.rmtree(aside)
            self._note(
                f"an earlier --overwrite of {out!r} was stopped after the new run's first checkpoint, while it "
                f"deleted the replaced run: that deletion ({aside}) is finished now"
            )
        else:
            raise RunFolderError(
                f"{aside!r} holds the run that an earlier --overwrite of {out!r} moved aside, and {out!r} now holds "
                f"something that is not a dcwp-prune run; move it away first (mv {shlex.quote(out)} "
                f"{shlex.quote(out)}.other), then put the run back (mv {shlex.quote(aside)} {shlex.quote(real)})"
            )

    # ----------------------------------------------------------------------------- changes
    def open(self) -> None:
        """Make ``out`` ready for the run (after every other check passed)."""
        if self.mode is None:
            self.check()
        self._opened = True
        if not self.is_main or self.mode == "resume":
            return
        if self.mode == "replace":
            os.replace(self.real, self.aside)
        elif self.mode == "reuse":
            shutil.rmtree(self.real)
        self._created = not os.path.isdir(self.real)
        os.makedirs(os.path.join(self.real, "checkpoints"), exist_ok=True)

    def commit(self) -> None:
        """The new run has a checkpoint: the replaced run may go now."""
        if self.committed:
            return
        self.committed = True
        if self.is_main and os.path.isdir(self.aside):
            shutil.rmtree(self.aside)

    def rollback(self) -> None:
        """The run failed before its first checkpoint: leave ``out`` as it was before the command."""
        if self.committed or not self._opened or not self.is_main or self.mode == "resume":
            return
        if self._created:
            shutil.rmtree(self.real, ignore_errors=True)
        elif os.path.isdir(self.real):  # an empty folder the user made: empty it again
            for name in os.listdir(self.real):
                path = os.path.join(self.real, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
        if self.mode == "replace" and os.path.isdir(self.aside):
            os.replace(self.aside, self.real)

    @property
    def has_checkpoint(self) -> bool:
        """Whether ``out`` holds anything a ``--resume`` can continue."""
        return os.path.isfile(os.path.join(self.out, "config.json")) and bool(finished_parts(self.out))
