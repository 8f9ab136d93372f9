"""The stage table of a DCWP run: each stage declared once (:data:`STAGES`), the seed rule (:func:`stage_seed`)
and :class:`StageRunner`, the one place a stage is restored, begun, run and marked finished.

Stage 1 trains f_D and f_B, stage 2 mines bias-conflicting samples, stage 3 learns the mask scores and prunes,
stage 4 fine-tunes the survivors (DCWP+ also retrains the rewound subnetwork) and the final stage evaluates.
What each stage does is :class:`~dcwp_prune.run.dcwp_run.DCWPRun`; the order is ``run_dcwp``'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch

from ..training.distributed import barrier
from ..training.engine import Runtime
from ..training.mining import MinedSet
from .checkpoint import set_rng_state
from .config import RunConfig
from .records import RunRecorder

__all__ = ["STAGES", "Stage", "StageRunner", "seed_everything", "stage_seed"]


@dataclass(frozen=True)
class Stage:
    """One stage of a run, declared once: its name (progress checkpoints and the first log name), its index
    (the order), the file that marks it finished (``checkpoints/NAME.pt``, or stage 2's ``mined.json``), the
    ``metrics.jsonl`` stage names it writes and its seed offset for :func:`stage_seed` (its index unless given:
    DCWP+'s rewound arm draws the same batches as stage 4)."""

    name: str
    index: int
    done_file: Optional[str]
    logs: Tuple[str, ...]
    seed: Optional[int] = None

    def path(self, out: str) -> Optional[str]:
        if self.done_file is None:
            return None
        if self.done_file.endswith(".json"):
            return os.path.join(out, self.done_file)
        return os.path.join(out, "checkpoints", f"{self.done_file}.pt")


#: The five stages (``docs/design.md``: what each does).
STAGES = (
    Stage("biased", 0, "stage1_biased", ("biased", "biased_d_eval", "vanilla")),
    Stage("mining", 1, "mined.json", ("mining",)),
    Stage("mask", 2, "stage3_mask", ("mask", "mask_eval", "prune")),
    Stage("finetune", 3, "stage4_finetune", ("finetune", "rewind", "finetune_eval")),
    # only with finetune.rewind = "auto" (DCWP+): the subnetwork retrained from its rewound weights
    Stage("retrain", 4, "stage4_retrain", ("retrain", "retrain_eval", "retrain_choice"), seed=3),
    Stage("final", 5, None, ("final",), seed=4),
)
BIASED, MINING, MASK, FINETUNE, RETRAIN, FINAL = STAGES
_LOG_STAGE = {log: stage.index for stage in STAGES for log in stage.logs}


def stage_seed(seed: int, index: int) -> int:
    """The seed stage ``index`` (0: f_D and f_B, 1: mining, 2: mask, 3: fine-tuning, 4: evaluation) starts from,
    for a run of seed ``seed``; the harness's baselines take the same one for the stage they stand in for."""
    return seed * 1000 + index


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and ``random`` (what every stage start does, with its own seed)."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    import random

    random.seed(seed)


class StageRunner:
    """Every stage's bookkeeping for one run: ``run_stage`` restores a stage finished before (resuming), or
    begins it (reseed, setup, the mid-stage progress checkpoint), runs its body and marks it finished."""

    def __init__(self, config: RunConfig, rt: Runtime, recorder: RunRecorder) -> None:
        self.config, self.rt, self.recorder = config, rt, recorder
        self.writes = rt.env.is_main
        self.progress = recorder.load("progress") if config.resume else None

    def done(self, stage: Stage) -> Optional[Dict[str, Any]]:
        """What a finished ``stage`` saved, when resuming (its checkpoint, or stage 2's mined set), else None."""
        if not self.config.resume:
            return None
        if stage is MINING:
            path = stage.path(self.config.out)
            return {"mined": MinedSet.load(path)} if os.path.isfile(path) else None  # type: ignore[arg-type]
        return self.recorder.load(stage.done_file)  # type: ignore[arg-type]

    def finish(self, stage: Stage, state: Dict[str, Any]) -> None:
        """Mark ``stage`` finished: its checkpoint (stage 2: ``mined.json``) written by the main rank."""
        if self.writes:
            if stage is MINING:
                state["mined"].save(stage.path(self.config.out))
            else:
                self.recorder.save_stage(stage.done_file, state)  # type: ignore[arg-type]
        if stage is not MINING:
            self.recorder.committed()
        barrier(self.rt.env)

    def begin(self, stage: Stage, setup: Optional[Callable[[], None]] = None) -> Optional[Dict[str, Any]]:
        """Reseed for the stage, run ``setup`` (e.g. model creation, so it never depends on earlier
        stages' RNG use), and return the progress checkpoint when resuming mid-stage (its RNG state
        restored after ``setup``)."""
        index, name = stage.index, stage.name
        seed_everything(stage_seed(self.config.seed, stage.index if stage.seed is None else stage.seed))
        if setup is not None:
            setup()
        if self.progress is not None and self.progress.get("stage") == name:
            state, self.progress = self.progress, None
            set_rng_state(state["rng"])
            it = int(state["iteration"])
            self.truncate_log(
                lambda r: (
                    _LOG_STAGE.get(r.get("stage"), 9) < index
                    or (_LOG_STAGE.get(r.get("stage")) == index and r.get("iteration", 0) <= it)
                )
            )
            return state
        self.truncate_log(lambda r: _LOG_STAGE.get(r.get("stage"), 9) < index)
        return None

    def run_stage(
        self,
        stage: Stage,
        body: Callable[[Optional[Dict[str, Any]]], Tuple[Dict[str, Any], Any]],
        restore: Callable[[Dict[str, Any]], Any],
        setup: Optional[Callable[[], None]] = None,
    ) -> Any:
        """Every stage's bookkeeping, in one place: a stage finished before (resuming) is restored from what it
        saved; otherwise :meth:`begin` (reseed, ``setup``, the mid-stage progress checkpoint if any), ``body``
        (given that checkpoint or None; returns what the stage saves and what it hands on) and :meth:`finish`
        (saved; the log committed). A stage without a done file (``final``) is begun and run, never saved."""
        if stage.done_file is not None:
            saved = self.done(stage)
            if saved is not None:
                return restore(saved)
        state, result = body(self.begin(stage, setup))
        if stage.done_file is not None:
            self.finish(stage, state)
        return result

    def truncate_log(self, keep: Callable[[Dict[str, Any]], bool]) -> None:
        if self.writes:
            self.recorder.truncate(keep)
