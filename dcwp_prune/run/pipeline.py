"""``run_dcwp``: the five DCWP stages end to end, with a run folder, checkpoints and resume.

Stage 1 trains f_D and f_B, stage 2 mines bias-conflicting samples, stage 3 learns mask logits on
the frozen f_D, the scores then prune f_D (``DCWPMethod``, or ``DCWPImportance`` structurally),
stage 4 fine-tunes the survivors and stage 5 evaluates on valid and test. Every stage start
reseeds the RNG and every stage end is checkpointed, so ``resume`` continues an interrupted run
and (on CPU, one process) ends with the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import torch
from torch import nn

from .._atomic import write_json
from ..errors import InputError
from ..models import create_model
from ..scores import MaskScores
from ..training.distributed import barrier, init_distributed
from ..training.engine import Runtime, StopFlag, cpu_has_bf16, resolve_device
from ..training.mask import kept_fraction
from ..training.mining import (  # noqa: F401 (the plausibility rule, re-exported)
    IMPLAUSIBLE_MINED_FRACTION,
    mined_fraction_bound,
    mining_warnings,
)
from .checkpoint import load_checkpoint
from .config import RunConfig, expand_paths, resolve_variant, validate
from .data import RunData, RunLoaders, load_run_data, resolve_data
from .dcwp_run import DCWPRun
from .preflight import check_model_fits, resume_config
from .presets import quick_schedule
from .records import RunRecorder
from .stage1 import STAGE1_KEYS, check_stage1_source, stage1_key
from .stages import STAGES, Stage, seed_everything, stage_seed

if TYPE_CHECKING:
    from .run_folder import RunFolder

__all__ = [
    "STAGE1_KEYS",
    "STAGES",
    "Stage",
    "DCWPResult",
    "RunData",
    "RunLoaders",
    "check_stage1_source",
    "stage1_key",
    "load_run_data",
    "resolve_data",
    "resolve_variant",
    "run_dcwp",
    "seed_everything",
    "stage_seed",
]


@dataclass
class DCWPResult:
    """What a run produced. ``metrics[name][split]`` holds :class:`BiasGroupAccuracy` outputs.

    ``run_dir`` is the run folder on the process that wrote it (rank 0), None on the other ranks.
    """

    run_dir: Optional[str]
    config: RunConfig
    metrics: Dict[str, Dict[str, Any]]
    selected: str  # "last" or "best_valid": which iterate the saved model is
    sparsity: float
    kept: Dict[str, float]
    mined: Dict[str, Any]
    structured: Optional[Dict[str, Any]] = None
    info: Dict[str, Any] = field(default_factory=dict)
    model: Optional[nn.Module] = None
    scores: Optional[MaskScores] = None
    warnings: List[str] = field(default_factory=list)  # results that must not be read as normal ones

    def to_dict(self) -> Dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "config": self.config.to_dict(),
            "metrics": self.metrics,
            "selected": self.selected,
            "sparsity": self.sparsity,
            "kept": self.kept,
            "mined": self.mined,
            "structured": self.structured,
            "info": self.info,
            "warnings": self.warnings,
        }


def _runtime(config: RunConfig) -> Runtime:
    device = resolve_device(config.device)
    env = init_distributed(device)
    if env.enabled and device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
    if config.cpu_amp and device.type != "cpu":
        warnings.warn(
            f"cpu_amp (--cpu-amp) applies to CPU runs and this one runs on {device}: ignored (on CUDA, "
            "bf16 autocast is the amp option, on by default)",
            RuntimeWarning,
            stacklevel=3,
        )
    if config.cpu_amp and device.type == "cpu" and not cpu_has_bf16():
        raise InputError(
            "cpu_amp (--cpu-amp) asks for bf16 autocast on the CPU, and this CPU has no native bf16 "
            "(AVX512-BF16 or AMX): it would run slower than fp32; drop --cpu-amp"
        )
    return Runtime(
        device=device, env=env, progress=config.progress, amp=config.amp, cpu_amp=config.cpu_amp, compile=config.compile
    )


def run_dcwp(config: RunConfig, *, force_config: bool = False, report: bool = True) -> DCWPResult:
    """Run DCWP end to end (stages 1-5) into ``config.out``.

    The run folder receives ``config.json`` (the resolved config), ``metrics.jsonl``, ``mined.json``,
    ``f_d.safetensors`` (the dense f_D of stage 1), ``scores.safetensors``, the pruned model
    (``model.safetensors`` + ``model.json``), ``results.json``, ``checkpoints/`` and, with ``report``
    (the default), ``report.json``, ``report.md`` and the plots, as the CLI writes them. Paths may
    start with ``~``. One process at a time may run in ``config.out`` (an OS-level lock; another one
    raises :class:`~dcwp_prune.run.lock.RunLockedError`). With ``config.resume`` an interrupted run continues
    from its last checkpoint
    with its saved config; ``config`` may then differ from it only in ``out``, ``device`` and
    ``progress`` unless ``force_config`` is set.

    Everything is checked before the run folder is touched (config, ``out``, data, model, weights
    files). With ``config.overwrite`` the old run is moved aside and deleted only once the new run has
    written its first checkpoint; a run that fails before that leaves ``out`` as it found it.

    Raises:
        RunFolderError: ``out`` exists and neither ``resume`` nor ``overwrite`` is set, is not a run
            folder, is a file or is not writable.
        ValueError: a bad option (or, on resume, options that differ from the saved ones).
        FloatingPointError: a loss became NaN / inf or exploded (training diverged).
        StopRequested: Ctrl-C; a checkpoint was written first (resume with ``resume=True``).
    """
    from .lock import run_lock
    from .run_folder import RunFolder, check_writable

    config = expand_paths(config)
    validate(config)
    rt = _runtime(config)
    folder = RunFolder(config.out, resume=config.resume, overwrite=config.overwrite, is_main=rt.env.is_main)
    check_writable(config.out)
    with run_lock(config.out, enabled=rt.env.is_main):  # one process at a time, for the whole run
        folder.check()  # before anything is loaded: a bad --out costs nothing
        barrier(rt.env)  # every rank has checked before the main one may change the folder
        with StopFlag() as stop:
            result = _run_stages(config, replace(rt, stop=stop), folder, force_config)
        if report and result.run_dir is not None:  # what the CLI writes: report.json / .md and the plots
            from .report import build_report

            build_report(result.run_dir)
        return result


def _run_stages(config: RunConfig, rt: Runtime, folder: "RunFolder", force_config: bool) -> DCWPResult:
    config = resolve_data(config)
    if config.resume:
        from .run_folder import read_saved_config

        saved = RunConfig.from_dict(read_saved_config(config.out))
        seed_everything(saved.seed)
        data = load_run_data(saved, resolve_variant(saved)["score_transform"])
        config = resume_config(config, saved, len(data.train), force_config)
        if config.data != saved.data or config.seed != saved.seed or config.variant != saved.variant:
            data = load_run_data(config, resolve_variant(config)["score_transform"])
    else:
        seed_everything(config.seed)
        data = load_run_data(config, resolve_variant(config)["score_transform"])
        if config.quick:
            config = quick_schedule(config, len(data.train))
    if config.data.batch_size > len(data.train):
        raise InputError(
            f"data.batch_size {config.data.batch_size} is larger than the training set ({len(data.train)} "
            f"images): every batch would repeat images (and the contrastive term is batch x batch); "
            f"pass --batch-size {len(data.train)} or less"
        )
    variant = resolve_variant(config)
    rt = replace(rt, checkpoint_every=config.checkpoint_every, label="[quick]" if config.quick else "")
    check_model_fits(create_model(config.model, data.num_classes, weights=config.weights).to(rt.device), data, config)
    if config.stage1_from:
        check_stage1_source(config)
    if config.resume:  # a damaged checkpoint is refused before config.json or metrics.jsonl change
        for name in (
            sorted(os.listdir(os.path.join(config.out, "checkpoints")))
            if os.path.isdir(os.path.join(config.out, "checkpoints"))
            else ()
        ):
            if name.endswith(".pt"):
                load_checkpoint(os.path.join(config.out, "checkpoints", name))
    # every check passed: only now does the run folder change
    folder.open()
    barrier(rt.env)
    recorder = RunRecorder(config.out, on_checkpoint=folder.commit)
    rt = replace(rt, save_fn=recorder.save_progress, log_fn=recorder.log)
    try:
        return _stages(config, rt, data, variant, recorder)
    except BaseException as err:
        folder.rollback()
        err.dcwp_checkpointed = folder.committed or config.resume  # type: ignore[attr-defined]
        raise


def _stages(
    config: RunConfig, rt: Runtime, data: RunData, variant: Dict[str, Any], recorder: RunRecorder
) -> DCWPResult:
    if rt.env.is_main:
        write_json(os.path.join(config.out, "config.json"), config.to_dict())
    run = DCWPRun(config, rt, data, recorder)
    stage1 = run.biased()
    mined = run.mining(stage1["model_b"], stage1["pseudo_scores"])
    notes = mining_warnings(mined.count, len(data.train), config.mining.method, config.data.ratio)
    for note in notes if rt.env.is_main else ():  # once, not once per rank
        warnings.warn(note, RuntimeWarning, stacklevel=2)
    model = stage1["model_d"]
    scores = run.mask(model, mined)
    structured = run.prune(model, scores)
    tuned = run.finetune(model, mined, stage1["model_b"])
    if variant["rewind"] == "auto":
        tuned = run.retrain(model, mined, stage1["model_b"], tuned)
    metrics = run.final(model, tuned, stage1["vanilla"], stage1.get("vanilla_best_valid"))
    selected = variant["selected"] if tuned.get("best_state") is not None else "last"
    if selected == "best_valid":
        model.load_state_dict(tuned["best_state"])
    result = DCWPResult(
        config.out if rt.env.is_main else None,
        config,
        metrics,
        selected,
        run.sparsity(model, scores),
        kept_fraction(scores, warn=False),
        mined.to_dict() | {"conflicting_ids": None},
        structured,
        info={
            "data": data.train.info,
            "valid": data.valid.info,
            "test": data.test.info,
            "device": str(rt.device),
            "world_size": rt.env.world_size,
            "variant": variant,
            "num_classes": data.num_classes,
            **({"rewind_chosen": tuned["chosen"]} if "chosen" in tuned else {}),
        },
        model=model,
        scores=scores,
        warnings=notes,
    )
    if rt.env.is_main:
        from .export import save_pruned_model

        shape = list(data.valid[0].image.shape)
        save_pruned_model(
            config.out,
            model,
            arch=config.model,
            num_classes=data.num_classes,
            input_shape=shape,
            history=structured["history"] if structured else None,
            extra={"selected": selected},
        )
        write_json(os.path.join(config.out, "results.json"), result.to_dict())
    barrier(rt.env)
    return result
