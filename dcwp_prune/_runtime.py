"""Shared machinery of the training stages: device, logging, progress, checkpoints, the step loop."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Dict, Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ._atomic import write_text
from .checkpoint import get_rng_state, save_checkpoint
from .distributed import DistEnv

__all__ = ["Runtime", "StopFlag", "StopRequested", "make_loader", "resolve_device", "run_loop", "unpack"]


class StopRequested(KeyboardInterrupt):
    """Raised after Ctrl-C once the current step finished and a checkpoint was written."""

    def __init__(self, checkpoint: Optional[str]) -> None:
        super().__init__(checkpoint)
        self.checkpoint = checkpoint


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return torch.device(name)


@dataclass
class Runtime:
    """Where a run executes and what it records. Only rank 0 writes files."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    env: DistEnv = field(default_factory=DistEnv)
    run_dir: Optional[str] = None
    progress: bool = False
    amp: bool = False
    checkpoint_every: int = 0
    label: str = ""  # e.g. "[quick]", shown in progress bars and logs
    compile: bool = False  # torch.compile the training forward of stages 1 and 4
    stop: Optional["StopFlag"] = None  # a run-wide Ctrl-C flag; loops install their own when None
    on_checkpoint: Optional[Callable[[], None]] = None  # called after every checkpoint write (run folder commit)

    @property
    def writes(self) -> bool:
        return self.run_dir is not None and self.env.is_main

    def autocast(self) -> ContextManager[Any]:
        if self.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def maybe_compile(self, module: torch.nn.Module) -> torch.nn.Module:
        """``torch.compile(module)`` when the run asks for it (stages 1 and 4; the masked stage 3 is eager)."""
        return torch.compile(module) if self.compile else module  # type: ignore[return-value]

    def path(self, *parts: str) -> str:
        assert self.run_dir is not None, "path() needs a run folder"
        return os.path.join(self.run_dir, *parts)

    def log(self, record: Dict[str, Any]) -> None:
        if self.writes:
            with open(self.path("metrics.jsonl"), "a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")

    def truncate_log(self, keep: Callable[[Dict[str, Any]], bool]) -> None:
        """Drop records a resumed run will write again."""
        if not self.writes or not os.path.isfile(self.path("metrics.jsonl")):
            return
        with open(self.path("metrics.jsonl")) as f:
            records = [json.loads(line) for line in f if line.strip()]
        write_text(self.path("metrics.jsonl"), "".join(json.dumps(r, sort_keys=True) + "\n" for r in records if keep(r)))

    def save_progress(self, stage: str, iteration: int, state: Dict[str, Any]) -> Optional[str]:
        """Mid-stage checkpoint (models, optimizers, RNG, position)."""
        if not self.writes:
            return None
        path = self.path("checkpoints", "progress.pt")
        save_checkpoint(path, dict(state, stage=stage, iteration=iteration, rng=get_rng_state()))
        self.checkpointed()
        return path

    def checkpointed(self) -> None:
        """Tell the run folder that a checkpoint exists now (an old run set aside may be deleted)."""
        if self.on_checkpoint is not None:
            self.on_checkpoint()


def unpack(batch: Any) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Sequence[str]]]:
    """``(images, labels, biases or None, ids or None)`` from a BiasSample batch or an ``(x, y)`` tuple."""
    if hasattr(batch, "image"):
        return batch.image, batch.label, batch.bias, batch.id
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        x, y = batch[0], batch[1]
        b = batch[2] if len(batch) > 2 and isinstance(batch[2], Tensor) else None
        ids = batch[3] if len(batch) > 3 else None
        return x, y, b, ids
    raise TypeError("batches must be BiasSample batches or (images, labels[, biases[, ids]]) tuples")


def make_loader(dataset: Dataset, *, batch_size: Optional[int] = None, batch_sampler: Optional[Sampler] = None,
                sampler: Optional[Sampler] = None, num_workers: int = 0, device: Optional[torch.device] = None,
                seed: int = 0) -> DataLoader:
    """A DataLoader with its own generator, so creating it never consumes the global RNG (exact resume)."""
    kwargs: Dict[str, Any] = dict(num_workers=num_workers, pin_memory=bool(device is not None and device.type == "cuda"),
                                  generator=torch.Generator().manual_seed(seed))
    if num_workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=4)
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **kwargs)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, **kwargs)


class StopFlag:
    """SIGINT sets a flag (the loop saves and stops after the step); a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopFlag":
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def run_loop(name: str, total: int, start: int, step: Callable[[int], Dict[str, Any]], runtime: Runtime,
             snapshot: Callable[[], Dict[str, Any]], on_eval: Optional[Callable[[int], None]] = None,
             eval_every: int = 0) -> None:
    """Run ``step(it)`` for ``it`` in ``[start, total)`` with progress, NaN checks, evals and checkpoints.

    ``step`` returns its logged values as tensors or floats; they are read back (a device sync) and
    checked for NaN / inf every 10 iterations and before every evaluation and checkpoint, so a
    diverged state is reported within 10 steps and never checkpointed.
    """
    bar = progress_bar(f"{name} {runtime.label}".strip(), total, start, runtime.progress and runtime.env.is_main)
    first: Dict[str, float] = {}  # the first logged value of each loss: the reference for an explosion
    own = runtime.stop is None
    stop = StopFlag() if own else runtime.stop
    try:
        with stop if own else contextlib.nullcontext():  # type: ignore[attr-defined]
            if stop.requested:  # Ctrl-C arrived between stages: checkpoint before the first step
                raise StopRequested(runtime.save_progress(name, start, snapshot()))
            for it in range(start, total):
                logs = step(it)  # detached tensors: read back only at report points (no per-step sync)
                bar.update(1)
                evaluate = on_eval is not None and eval_every and ((it + 1) % eval_every == 0 or it + 1 == total)
                periodic = runtime.checkpoint_every and (it + 1) % runtime.checkpoint_every == 0 and it + 1 < total
                if (it + 1) % 10 == 0 or it + 1 == total or evaluate or periodic or stop.requested:
                    values = _finite(name, it + 1, logs, first)  # before any evaluation or checkpoint of this state
                    bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
                    runtime.log({"stage": name, "iteration": it + 1, **values})
                if evaluate:
                    on_eval(it + 1)  # type: ignore[misc]
                if periodic or stop.requested:
                    path = runtime.save_progress(name, it + 1, snapshot())
                    if stop.requested:
                        raise StopRequested(path)
    finally:
        bar.close()


#: A loss above this, or above EXPLODE_FACTOR times its first logged value, has diverged: no
#: classification, contrastive or sparsity loss of a healthy run comes near it.
EXPLODE_ABSOLUTE = 1e6
EXPLODE_FACTOR = 1e4


class LineProgress:
    """Progress for a log file: one plain line every ``every`` percent (and at the end), with rate and ETA.

    Used instead of a tqdm bar when stderr is not a terminal, so a log holds a few lines per stage
    rather than every refresh of a bar joined by carriage returns.
    """

    def __init__(self, desc: str, total: int, initial: int = 0, every: float = 10.0, stream: Any = None) -> None:
        self.desc, self.total, self.n, self.every = desc, total, initial, every
        self.stream = stream if stream is not None else sys.stderr
        self.postfix: Dict[str, str] = {}
        self._start_n, self._start_t = initial, time.monotonic()
        self._next = self._threshold(initial)

    def _threshold(self, n: int) -> int:
        step = max(1, int(self.total * self.every / 100))
        return (n // step + 1) * step

    def set_postfix(self, values: Dict[str, str], refresh: bool = False) -> None:
        self.postfix = dict(values)

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.n >= self._next or self.n >= self.total:
            self._next = self._threshold(self.n)
            self._print()

    def _print(self) -> None:
        elapsed = time.monotonic() - self._start_t
        done = self.n - self._start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        pct = 100.0 * self.n / max(self.total, 1)
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {self.n}/{self.total} ({pct:.0f}%) {rate:.3g} it/s, elapsed {_hms(elapsed)}, "
              f"ETA {_hms(eta)}{extra}", file=self.stream, flush=True)

    def close(self) -> None:
        pass


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def progress_bar(desc: str, total: int, initial: int, enabled: bool) -> Any:
    """A tqdm bar on a terminal, :class:`LineProgress` lines when stderr is a file or pipe, or nothing."""
    if enabled and not sys.stderr.isatty():
        return LineProgress(desc, total, initial)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="it", dynamic_ncols=True, disable=not enabled, leave=True)


def _finite(name: str, iteration: int, logs: Dict[str, Any], first: Dict[str, float]) -> Dict[str, float]:
    """The logged values as floats; raise ``FloatingPointError`` on NaN / inf or an exploding loss."""
    values = {k: float(v) for k, v in logs.items()}
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(
            f"{name}: {', '.join(bad)} became {list(bad.values())[0]} at iteration {iteration} or earlier; "
            "lower the learning rate (or check the data)"
        )
    for k, v in values.items():
        if not k.startswith("loss"):
            continue
        ref = first.setdefault(k, v)
        if abs(v) > EXPLODE_ABSOLUTE or abs(v) > EXPLODE_FACTOR * max(abs(ref), 1.0):
            raise FloatingPointError(
                f"{name}: {k} exploded to {v:.3g} at iteration {iteration} (first logged value {ref:.3g}); the "
                "training diverged: lower the learning rate"
            )
    return values


def batches(loader: DataLoader) -> Iterator[Any]:
    """Iterate an (infinite) loader forever, re-creating the iterator only if it ends."""
    while True:
        yield from loader
