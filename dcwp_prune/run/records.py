"""What a run writes while it trains: ``metrics.jsonl`` records and the checkpoints of its stages.

The training stages never write files: their :class:`~dcwp_prune.training.engine.Runtime` carries
:meth:`RunRecorder.log` and :meth:`RunRecorder.save_progress` as callbacks.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Callable, Dict, List, Optional

from .._atomic import write_text
from ..errors import InputError
from .checkpoint import get_rng_state, load_checkpoint, save_checkpoint

__all__ = ["RunRecorder", "read_records"]


def read_records(path: str) -> List[Dict[str, Any]]:
    """The records of a ``metrics.jsonl``; a torn last line (what a kill during a write leaves) is dropped
    with a warning, any other unreadable line is an error naming the file and the line."""
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    records: List[Dict[str, Any]] = []
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    for n, (lineno, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise InputError("not a JSON object")
        except ValueError as err:
            if n == len(numbered) - 1:
                warnings.warn(
                    f"{path}: the last line ({lineno}) is cut short (a run killed while it wrote it); it is dropped",
                    RuntimeWarning,
                    stacklevel=2,
                )
                break
            raise InputError(
                f"{path!r} line {lineno} is not a JSON record ({err}); the file is damaged: delete the "
                "line (or the file: it holds the logs only) and run the command again"
            ) from None
        records.append(record)
    return records


class RunRecorder:
    """Files of one run folder: ``metrics.jsonl`` and ``checkpoints/{stage}.pt`` / ``progress.pt``.

    Args:
        run_dir: the run folder.
        on_checkpoint: called after every checkpoint write (the run folder's commit: an old run set
            aside by ``--overwrite`` may be deleted once the new run has a checkpoint).
    """

    def __init__(self, run_dir: str, on_checkpoint: Optional[Callable[[], None]] = None) -> None:
        self.run_dir = run_dir
        self.on_checkpoint = on_checkpoint

    def path(self, *parts: str) -> str:
        return os.path.join(self.run_dir, *parts)

    # ------------------------------------------------------------------------------ metrics.jsonl
    def log(self, record: Dict[str, Any]) -> None:
        """Append one record (one JSON line)."""
        with open(self.path("metrics.jsonl"), "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def truncate(self, keep: Callable[[Dict[str, Any]], bool]) -> None:
        """Drop the records a resumed run will write again."""
        path = self.path("metrics.jsonl")
        if not os.path.isfile(path):
            return
        records = read_records(path)
        write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records if keep(r)))

    # ------------------------------------------------------------------------------ checkpoints
    def checkpoint(self, name: str) -> str:
        return self.path("checkpoints", f"{name}.pt")

    def save_progress(self, stage: str, iteration: int, state: Dict[str, Any]) -> str:
        """Mid-stage checkpoint: the stage's state, its position and every RNG stream."""
        path = self.checkpoint("progress")
        save_checkpoint(path, dict(state, stage=stage, iteration=iteration, rng=get_rng_state()))
        self.committed()
        return path

    def save_stage(self, name: str, state: Dict[str, Any]) -> None:
        """End-of-stage checkpoint; the progress checkpoint it supersedes is removed."""
        save_checkpoint(self.checkpoint(name), state)
        if os.path.isfile(self.checkpoint("progress")):
            os.unlink(self.checkpoint("progress"))

    def load(self, name: str) -> Optional[Dict[str, Any]]:
        """A checkpoint of this run (``weights_only``), or None when it does not exist."""
        return load_checkpoint(self.checkpoint(name)) if os.path.isfile(self.checkpoint(name)) else None

    def committed(self) -> None:
        if self.on_checkpoint is not None:
            self.on_checkpoint()
