"""The one training loop every stage runs on, and what it runs with.

A stage is a step function plus its state. :class:`Engine` owns the rest: optimizer and scheduler
creation, the DDP / ``torch.compile`` wrap, resume (every tracked object restored from a progress
checkpoint), the loop with progress, NaN / divergence checks, evaluation cadence, checkpoint
cadence and Ctrl-C. It writes no file: checkpoints and log records go to the callbacks of the
:class:`Runtime`, which the run layer (``dcwp_prune.run``) provides.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    ContextManager,
    Dict,
    Iterable,
    Iterator,
    Literal,
    Optional,
    Sequence,
    Tuple,
)

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import InputError, InputTypeError
from ..options import choices
from .distributed import DistEnv, all_reduce_sum, wrap_ddp
from .progress import progress_bar

__all__ = [
    "OPTIMIZERS",
    "Engine",
    "OptimizerName",
    "Runtime",
    "StopFlag",
    "StopRequested",
    "batches",
    "cpu_has_bf16",
    "make_loader",
    "make_optimizer",
    "make_scheduler",
    "resolve_device",
    "unpack",
]

OptimizerName = Literal["adam", "sgd"]
OPTIMIZERS: Tuple[str, ...] = choices(OptimizerName)

#: ``save(stage, iteration, state) -> path or None``: writes a mid-stage checkpoint (the run layer
#: adds the RNG streams); ``log(record)``: records one metrics line.
SaveFn = Callable[[str, int, Dict[str, Any]], Optional[str]]
LogFn = Callable[[Dict[str, Any]], None]


class StopRequested(KeyboardInterrupt):
    """Raised after Ctrl-C (or SIGTERM) once the current step finished and a checkpoint was written.

    ``signum`` is the signal that asked for the stop (``signal.SIGINT`` or ``signal.SIGTERM``).
    """

    def __init__(self, checkpoint: Optional[str], signum: int = signal.SIGINT) -> None:
        super().__init__(checkpoint)
        self.checkpoint = checkpoint
        self.signum = int(signum)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX, through oneDNN); without it bf16
    autocast on CPU is emulated and slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return torch.device(name)


@dataclass(frozen=True)
class Runtime:
    """Where a stage executes and where its records go. Only the main rank logs and saves.

    Frozen: built once, with its callbacks (``dataclasses.replace`` makes a variant). ``save_fn`` and
    ``log_fn`` are the callbacks behind :meth:`save_progress` and :meth:`log` (the run layer writes
    ``checkpoints/progress.pt`` and ``metrics.jsonl``); without them a stage keeps nothing, as when
    called from the API.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    env: DistEnv = field(default_factory=DistEnv)
    progress: bool = True  # a bar on a terminal, a few plain lines in a log (progress_bar)
    amp: bool = False  # bf16 autocast on CUDA
    cpu_amp: bool = False  # bf16 autocast on CPU (worth it only where the CPU has native bf16: cpu_has_bf16())
    checkpoint_every: int = 0
    label: str = ""  # e.g. "[quick]", shown in progress bars and logs
    compile: bool = False  # torch.compile the training forward of stages 1 and 4
    stop: Optional["StopFlag"] = None  # a run-wide Ctrl-C flag; loops install their own when None
    save_fn: Optional[SaveFn] = None
    log_fn: Optional[LogFn] = None

    def autocast(self) -> ContextManager[Any]:
        if self.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if self.cpu_amp and self.device.type == "cpu":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def log(self, record: Dict[str, Any]) -> None:
        if self.log_fn is not None and self.env.is_main:
            self.log_fn(record)

    def save_progress(self, stage: str, iteration: int, state: Dict[str, Any]) -> Optional[str]:
        """Mid-stage checkpoint through ``save_fn`` (main rank only); its path, or None."""
        if self.save_fn is None or not self.env.is_main:
            return None
        return self.save_fn(stage, iteration, state)


def make_optimizer(params: Iterable[Tensor], name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam with betas (0.9, 0.99) or SGD with momentum 0.9 (the official settings), over trainable ``params``."""
    params = [p for p in params if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise InputError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def make_scheduler(opt: torch.optim.Optimizer, step: int, gamma: float) -> torch.optim.lr_scheduler.StepLR:
    """StepLR stepped every iteration."""
    return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, step), gamma=gamma)


class Engine:
    """The loop of one stage: ``Engine(name, runtime, iterations)``, then ``track`` / ``optimizer`` /
    ``prepare`` what the stage trains, ``resume(checkpoint)``, and ``run(step)``.

    ``step(it)`` does one iteration (usually ``engine.update(loss)``) and returns the values to log
    (detached tensors or floats). Everything tracked is saved in every progress checkpoint under its
    key and restored by :meth:`resume`, so an interrupted stage continues exactly.

    Example:
        >>> engine = Engine("demo", Runtime(), iterations=3)
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = engine.optimizer("", [w], "sgd", lr=0.1)  # SGD with momentum 0.9
        >>> engine.run(lambda it: {"loss": engine.update((w ** 2).sum())})
        >>> round(float(w[0].detach()), 4)  # 1 -> 0.8 -> 0.46 -> 0.062
        0.062
    """

    def __init__(self, name: str, runtime: Optional[Runtime], iterations: int, *, eval_every: int = 0) -> None:
        self.name, self.runtime, self.iterations, self.eval_every = name, runtime or Runtime(), iterations, eval_every
        self.start = 0
        self._state: Dict[str, Tuple[Callable[[], Any], Callable[[Any], None]]] = {}
        self._optimizers: Dict[str, Tuple[torch.optim.Optimizer, Optional[Any]]] = {}
        self._optional: set = set()

    # ------------------------------------------------------------------------------ state
    def track(
        self,
        key: str,
        obj: Any = None,
        *,
        get: Optional[Callable[[], Any]] = None,
        set: Optional[Callable[[Any], None]] = None,
        optional: bool = False,
    ) -> None:
        """Save ``obj.state_dict()`` (or ``get()``) under ``key`` in checkpoints; restore it on resume.

        ``optional``: a checkpoint without ``key`` (written by an earlier release) resumes with its current value."""
        if key in self._state:
            raise InputError(f"{self.name}: state {key!r} is tracked twice")
        if obj is not None:
            get, set = obj.state_dict, obj.load_state_dict
        if get is None or set is None:
            raise InputError(f"{self.name}: track {key!r} needs an object with state_dict() or get= and set=")
        self._state[key] = (get, set)
        if optional:
            self._optional.add(key)

    def state_dict(self) -> Dict[str, Any]:
        return {key: get() for key, (get, _) in self._state.items()}

    def resume(self, checkpoint: Optional[Dict[str, Any]]) -> int:
        """Restore every tracked object from a progress checkpoint of this stage; the iteration to start at."""
        if checkpoint is None:
            return self.start
        missing = [k for k in self._state if k not in checkpoint and k not in self._optional]
        if missing:
            raise InputError(
                f"the {self.name} progress checkpoint lacks {missing}; it was written by another "
                "configuration: resume with the options of the run that wrote it"
            )
        for key, (_, load) in self._state.items():
            if key in checkpoint:
                load(checkpoint[key])
        self.start = int(checkpoint["iteration"])
        return self.start

    # ------------------------------------------------------------------------------ what trains
    def optimizer(
        self,
        key: str,
        params: Iterable[Tensor],
        name: str,
        lr: float,
        weight_decay: float = 0.0,
        *,
        decay_step: Optional[int] = None,
        gamma: float = 1.0,
    ) -> torch.optim.Optimizer:
        """An optimizer (and a per-iteration StepLR when ``decay_step`` is given), tracked as
        ``opt_KEY`` / ``sched_KEY`` (``opt`` / ``sched`` for the empty key) and stepped by :meth:`update`."""
        opt = make_optimizer(params, name, lr, weight_decay)
        self.add_optimizer(key, opt, make_scheduler(opt, decay_step, gamma) if decay_step is not None else None)
        return opt

    def add_optimizer(self, key: str, opt: torch.optim.Optimizer, sched: Optional[Any] = None) -> None:
        """Track and step an optimizer built elsewhere (see :meth:`optimizer` for the keys)."""
        if key in self._optimizers:
            raise InputError(f"{self.name}: optimizer {key!r} is registered twice")
        suffix = f"_{key}" if key else ""
        self.track(f"opt{suffix}", opt)
        if sched is not None:
            self.track(f"sched{suffix}", sched)
        self._optimizers[key] = (opt, sched)

    def prepare(self, model: nn.Module, *, compile: bool = True) -> nn.Module:
        """``model`` wrapped for the run: DistributedDataParallel when distributed, ``torch.compile`` when asked."""
        rt = self.runtime
        wrapped = wrap_ddp(model, rt.env, rt.device)
        return torch.compile(wrapped) if compile and rt.compile else wrapped  # type: ignore[return-value]

    def update(self, loss: Tensor, key: str = "", before_step: Optional[Callable[[], None]] = None) -> Tensor:
        """One optimisation step of optimizer ``key``: zero grads, backward, ``before_step()``, step, scheduler step.

        Returns the detached loss (what the step logs).
        """
        opt, sched = self._optimizers[key]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if before_step is not None:
            before_step()
        opt.step()
        if sched is not None:
            sched.step()
        return loss.detach()

    # ------------------------------------------------------------------------------ the loop
    def run(self, step: Callable[[int], Dict[str, Any]], on_eval: Optional[Callable[[int], None]] = None) -> None:
        """Run ``step(it)`` for ``it`` in ``[start, iterations)`` with progress, checks, evals and checkpoints.

        Logged values are read back (a device sync) and checked for NaN / inf / explosion every 10
        iterations and before every evaluation and checkpoint, so a diverged state is reported within
        10 steps and never checkpointed. ``on_eval(it)`` runs every ``eval_every`` iterations and at
        the end. Ctrl-C or SIGTERM saves a checkpoint after the current step and raises :class:`StopRequested`.
        """
        rt, name, total = self.runtime, self.name, self.iterations
        bar = progress_bar(f"{name} {rt.label}".strip(), total, self.start, rt.progress and rt.env.is_main)
        first: Dict[str, float] = {}  # the first logged value of each loss: the reference for an explosion
        started = time.perf_counter()  # records carry the stage's wall time so far (evaluations included)
        own = rt.stop is None
        stop = StopFlag() if own else rt.stop
        try:
            with stop if own else contextlib.nullcontext():  # type: ignore[attr-defined]
                if self._stop_agreed(stop, sync=True):  # a signal arrived between stages: checkpoint first
                    raise StopRequested(rt.save_progress(name, self.start, self.state_dict()), stop.signum)
                for it in range(self.start, total):
                    logs = step(it)  # detached tensors: read back only at report points (no per-step sync)
                    bar.update(1)
                    done = it + 1
                    evaluate = (
                        on_eval is not None and self.eval_every > 0 and (done % self.eval_every == 0 or done == total)
                    )
                    periodic = rt.checkpoint_every > 0 and done % rt.checkpoint_every == 0 and done < total
                    stopping = self._stop_agreed(stop, sync=done % STOP_SYNC_EVERY == 0)
                    if done % 10 == 0 or done == total or evaluate or periodic or stopping:
                        values = _finite(name, done, logs, first)  # before any evaluation or checkpoint of this state
                        bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
                        rt.log(
                            {
                                "stage": name,
                                "iteration": done,
                                **values,
                                "elapsed_s": round(time.perf_counter() - started, 3),
                            }
                        )
                    if evaluate:
                        on_eval(done)  # type: ignore[misc]
                    if periodic or stopping:
                        path = rt.save_progress(name, done, self.state_dict())
                        if stopping:
                            raise StopRequested(path, stop.signum)
        finally:
            bar.close()

    def _stop_agreed(self, stop: "StopFlag", sync: bool) -> bool:
        """Whether to stop now. One process: as soon as a signal arrived. Under DDP every rank must stop
        after the same step (a rank that went on would wait forever in the next all-reduce), so the ranks
        agree, by one all-reduce of the flags, at every ``sync`` point (every :data:`STOP_SYNC_EVERY`
        steps and before a stage's first step) and stop there if any rank was signalled."""
        env = self.runtime.env
        if not env.enabled:
            return stop.requested
        if not sync:
            return False
        flags = all_reduce_sum(torch.tensor([float(stop.requested)], device=self.runtime.device), env)
        if flags.item() > 0 and not stop.requested:
            stop.requested = True  # another rank was signalled: this one stops with it
        return stop.requested


def unpack(batch: Any) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Sequence[str]]]:
    """``(images, labels, biases or None, ids or None)`` from a BiasSample batch or an ``(x, y)`` tuple."""
    if hasattr(batch, "image"):
        return batch.image, batch.label, batch.bias, batch.id
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        x, y = batch[0], batch[1]
        b = batch[2] if len(batch) > 2 and isinstance(batch[2], Tensor) else None
        ids = batch[3] if len(batch) > 3 else None
        return x, y, b, ids
    raise InputTypeError("batches must be BiasSample batches or (images, labels[, biases[, ids]]) tuples")


def make_loader(
    dataset: Dataset,
    *,
    batch_size: Optional[int] = None,
    batch_sampler: Optional[Sampler] = None,
    sampler: Optional[Sampler] = None,
    num_workers: int = 0,
    device: Optional[torch.device] = None,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader with its own generator, so creating it never consumes the global RNG (exact resume)."""
    kwargs: Dict[str, Any] = dict(
        num_workers=num_workers,
        pin_memory=bool(device is not None and device.type == "cuda"),
        generator=torch.Generator().manual_seed(seed),
    )
    if num_workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=4)
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **kwargs)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, **kwargs)


class StopFlag:
    """SIGINT (Ctrl-C) or SIGTERM (``kill``, a batch scheduler's or container's stop) sets a flag: the
    loop saves a checkpoint and stops after the current step. A second signal interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.signum: int = signal.SIGINT
        self._previous: Dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signum = signum

    def __enter__(self) -> "StopFlag":
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: leave the signals alone
                break
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            if previous is not None:  # None: a handler installed outside Python, which cannot be restored
                signal.signal(sig, previous)
        self._previous = {}


#: Under DDP, the ranks agree on a stop request every this many steps (one all-reduce of a flag).
STOP_SYNC_EVERY = 10

#: A loss above this, or above EXPLODE_FACTOR times its first logged value, has diverged: no
#: classification, contrastive or sparsity loss of a healthy run comes near it.
EXPLODE_ABSOLUTE = 1e6
EXPLODE_FACTOR = 1e4


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
