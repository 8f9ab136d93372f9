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
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .._atomic import write_bytes, write_json
from ..adapters.torch_prune import dcwp_global_unstructured, pruned_sparsity, shuffle_masks
from ..data import dataset_spec
from ..errors import InputError
from ..models import classifier_of, create_model
from ..scores import MaskScores
from ..training.biased import train_biased_model
from ..training.distributed import barrier, init_distributed
from ..training.engine import Runtime, StopFlag, cpu_has_bf16, resolve_device
from ..training.finetune import finetune
from ..training.mask import kept_fraction, learn_mask_scores
from ..training.mining import (  # noqa: F401 (the plausibility rule, re-exported)
    IMPLAUSIBLE_MINED_FRACTION,
    MinedSet,
    mine_conflicting,
    mined_fraction_bound,
    mining_warnings,
)
from ..training.sampling import upweight
from ..training.selection import best_summary
from .checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from .config import RunConfig, expand_paths, resolve_variant, validate
from .data import RunData, RunLoaders, load_run_data, resolve_data
from .presets import quick_schedule
from .records import RunRecorder

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


# ------------------------------------------------------------------------------------ resume
def _resume_config(given: RunConfig, saved: RunConfig, n_train: int, force_config: bool) -> RunConfig:
    """The config a resumed run continues with: the saved one, unless ``force_config`` applies the given one.

    ``given`` may differ from ``saved`` only in where and how the run executes (out, device, progress);
    any other difference is an error listing them, so that no option is ignored silently.
    """
    from .run_folder import RUNTIME_KEYS, config_differences

    expected = quick_schedule(given, n_train) if given.quick else given  # a quick run's schedule is derived
    diffs = config_differences(saved.to_dict(), expected.to_dict())
    runtime = {k: getattr(given, k) for k in RUNTIME_KEYS if k not in ("resume", "overwrite")}
    if diffs and not force_config:
        raise InputError(
            f"--resume: these options differ from the saved {os.path.join(given.out, 'config.json')}: "
            f"{'; '.join(diffs)}. Resume with the saved options (drop those flags) or pass "
            "--force-config to continue with the new ones"
        )
    frozen = _finished_stage_keys(given.out)
    fixed = [d for d in diffs if d.split(":")[0].split(".")[0] in frozen and d.split(":")[0] not in _LOADER_ONLY]
    if fixed:
        raise InputError(
            f"--resume --force-config cannot change what a finished stage was made with: {'; '.join(fixed)} "
            f"(the checkpoints in {given.out!r} hold its result). Start a new run for these options "
            "(another --out, or --overwrite; --stage1-from reuses this run's stage 1 where it matches)"
        )
    base = expected if diffs else saved
    return base.replace(resume=True, overwrite=False, **runtime)


#: Data options that only change how the data is loaded, never what stage 1 learned from.
_LOADER_ONLY = ("data.num_workers", "data.eval_batch_size")


def _finished_stage_keys(out: str) -> Tuple[str, ...]:
    """Top-level config keys that the finished stages of run folder ``out`` were made with."""
    keys: Tuple[str, ...] = ()
    if any(os.path.isfile(os.path.join(out, "checkpoints", f"{name}.pt")) for name in (BIASED.done_file, "progress")):
        keys += STAGE1_KEYS  # a progress checkpoint holds stage 1's models or what was built from them
    if os.path.isfile(MINING.path(out)):  # type: ignore[arg-type]
        keys += ("mining",)
    return keys


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


def _load_model_file(model: nn.Module, path: str) -> None:
    """A trained f_D from ``path``: every key and shape must match (the error names the first mismatches)."""
    from ..models import load_state_dict_checked, read_state_dict

    load_state_dict_checked(model, read_state_dict(path), path)


#: What a run's stage 1 depends on: a run may start from another run's stage 1 only if these agree.
STAGE1_KEYS = ("model", "weights", "model_file", "seed", "data", "biased", "cpu_amp")


def stage1_key(config: RunConfig) -> Dict[str, Any]:
    """What ``config``'s stage 1 is computed from (:data:`STAGE1_KEYS`, with the variant's f_B length resolved;
    data-loading options that do not change the data left out): two runs with equal keys train the same stage 1."""
    d = config.to_dict()
    out = {k: d[k] for k in STAGE1_KEYS}
    out["data"] = {**out["data"], "num_workers": 0, "eval_batch_size": 1}
    out["biased"] = {**out["biased"], "biased_length": resolve_variant(config)["fb_length"]}
    return out


def check_stage1_source(config: RunConfig) -> None:
    """Refuse a ``stage1_from`` folder that has no finished stage 1 or trained it differently.

    Data-loading options that do not change the data (workers, evaluation batch size) may differ;
    anything else of :data:`STAGE1_KEYS` is an error listing the differences, and so is a source that
    mined with ``oracle`` (its f_B was never trained) for a run that mines with f_B.
    """
    from .run_folder import config_differences, read_saved_config

    source = config.stage1_from
    assert source is not None
    if not os.path.isfile(os.path.join(source, "checkpoints", "stage1_biased.pt")):
        raise InputError(
            f"stage1_from {source!r} has no finished stage 1 (checkpoints/stage1_biased.pt); "
            "run it to the end of stage 1 first"
        )
    saved = resolve_data(RunConfig.from_dict(read_saved_config(source)))

    diffs = [
        d
        + (" (--fb-length; unset, it is the variant's: plus 2, else 1)" if d.startswith("biased.biased_length") else "")
        for d in config_differences(stage1_key(saved), stage1_key(config))
    ]
    if saved.mining.method == "oracle" and config.mining.method != "oracle":
        diffs.append("mining.method: the source mined with 'oracle', so its f_B was never trained")
    if diffs:
        raise InputError(
            f"stage1_from {source!r} trained stage 1 differently: {'; '.join(diffs)}. Start from a run "
            "with the same model, data, seed and [biased] options, or drop stage1_from"
        )


def _check_model_fits(model: nn.Module, data: RunData, config: RunConfig) -> None:
    """Forward passes on a real sample in eval and training mode (and the structured-support check) before
    any training, on a throwaway ``model``; a ``model_file`` is loaded into it now too, so that a bad file
    fails before the run folder exists."""
    if config.model_file:
        _load_model_file(model, config.model_file)
    MaskScores.from_model(model, include=config.mask.include or None, exclude=config.mask.exclude or None)  # patterns
    x = data.valid[0].image.unsqueeze(0).to(next(model.parameters()).device)
    linear_out: Dict[nn.Module, Any] = {}
    hooks = [
        m.register_forward_hook(lambda mod, _, o: linear_out.__setitem__(mod, o))
        for m in model.modules()
        if isinstance(m, nn.Linear)
    ]
    try:
        with torch.no_grad():
            logits = model.eval()(x)
            for h in hooks:
                h.remove()
            out = model.train()(torch.cat([x, x]))  # stage 1's mode: auxiliary heads run only here
    except (RuntimeError, AssertionError, ValueError, IndexError, TypeError) as err:
        # torchvision's ViT asserts its fixed input size (AssertionError); convolutions raise RuntimeError
        need = getattr(model, "image_size", None)
        fix = (
            f"pass --image-size {need} ([data] image_size)"
            if isinstance(need, int) and need != x.shape[-1]
            else "pass an --image-size the model accepts ([data] image_size)"
        )
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise InputError(
            f"model {config.model!r} cannot take {config.data.name} images of shape "
            f"{tuple(x.shape[1:])} ({first}); {fix} or choose another model"
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, data.num_classes):  # one (N, C) logits tensor
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        raise InputError(
            f"model {config.model!r} returns {got} in training mode; DCWP trains on one logits tensor of "
            f"shape (batch, {data.num_classes}): build it without auxiliary heads, or wrap it to return the logits"
        )
    try:  # stages 3 and 4 take the classifier's input as the contrastive feature
        head = classifier_of(model)
    except ValueError as err:
        raise InputError(
            f"model {config.model!r}: {err} (the contrastive term of stages 3 and 4 takes the input of the "
            "nn.Linear that produces the logits); choose another model, or prune a trained one with "
            "`dcwp-prune prune` / DCWPMethod"
        ) from None
    producer = next((m for m, o in linear_out.items() if o is logits), None)  # the nn.Linear that returned the logits
    if (producer is not None and producer is not head) or head.out_features != data.num_classes:
        names = {m: n for n, m in model.named_modules()}
        what = (
            f"the logits come from {names[producer]!r}, but its last nn.Linear is {names[head]!r} ({head})"
            if producer is not None
            else f"its last nn.Linear, {names[head]!r} ({head}), does not produce the {data.num_classes} logits"
        )
        raise InputError(
            f"model {config.model!r}: {what}; DCWP takes the input of the last nn.Linear the model "
            "registers as the contrastive feature, so define the classifier last in the model's __init__"
        )
    if config.prune.structured:
        from ..adapters.structured import check_structured_support

        check_structured_support(model)


# ------------------------------------------------------------------------------------ stages
class _Run:
    def __init__(self, config: RunConfig, rt: Runtime, data: RunData, recorder: RunRecorder) -> None:
        self.config, self.rt, self.data, self.recorder = config, rt, data, recorder
        self.writes = rt.env.is_main
        self.variant = resolve_variant(config)
        self.loaders = RunLoaders(config, data, rt)
        self.progress = recorder.load("progress") if config.resume else None
        self.select_metric = dataset_spec(config.data.name).select_metric

    # helpers ---------------------------------------------------------------------------------
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

    def new_model(self) -> nn.Module:
        c = self.config
        model = create_model(c.model, self.data.num_classes, weights=c.weights).to(self.rt.device)
        if c.channels_last and self.rt.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return model

    # stage 1 ---------------------------------------------------------------------------------
    def save_dense(self, state: Dict[str, Any]) -> None:
        """``f_d.safetensors``: the dense f_D that stage 3 scores (``dcwp-prune prune --model-file`` takes it)."""
        path = os.path.join(self.config.out, "f_d.safetensors")
        if self.writes and not (self.config.resume and os.path.isfile(path)):
            from safetensors.torch import save

            write_bytes(path, save({k: v.detach().contiguous().cpu() for k, v in state.items()}))

    def biased(self) -> Dict[str, Any]:
        c = self.config
        models: List[nn.Module] = []
        body = self.reuse_stage1 if c.stage1_from else self.train_stage1
        stage1 = self.run_stage(
            BIASED,
            lambda resume: body(resume, models),
            self.with_models,
            setup=None if c.stage1_from else lambda: models.extend([self.new_model(), self.new_model()]),
        )
        self.save_dense(stage1["model_d"].state_dict())  # also for a run folder of an earlier release (none there)
        return stage1

    def train_stage1(
        self, resume: Optional[Dict[str, Any]], models: List[nn.Module]
    ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """Stage 1's body: f_D and f_B trained on the same batches (``models``, built by the stage's setup)."""
        c = self.config
        model_d, model_b = models
        if c.model_file:
            _load_model_file(model_d, c.model_file)
        train_d = None if c.model_file else model_d
        train_b = None if c.mining.method == "oracle" else model_b
        n = len(self.data.train)
        out = train_biased_model(
            train_b,
            self.loaders.train(1, int(resume["iteration"]) if resume else 0),
            c.biased.replace(biased_length=self.variant["fb_length"]),
            self.rt,
            model_d=train_d,
            score_loader=self.loaders.eval(self.data.train_scoring),
            num_samples=n,
            pseudo_every=max(1, n // c.data.batch_size),
            resume=resume,
            evaluate_fn=self.loaders.evaluate,
            eval_every=c.finetune.eval_every,
            select_metric=self.select_metric,
        )
        vanilla = self.loaders.evaluate(model_d)
        self.rt.log({"stage": "vanilla", **vanilla})
        state = {
            "model_d": model_d.state_dict(),
            "model_b": model_b.state_dict(),
            "vanilla": vanilla,
            "pseudo_scores": out["pseudo_scores"] if out["pseudo_scores"] is not None else torch.zeros(0),
            "vanilla_best_valid": out["best_d"],
        }
        self.save_snapshots(out["snapshots"])  # before stage 1 counts as done, so a finished stage 1 has them
        return state, {**state, "model_d": model_d, "model_b": model_b}

    def save_snapshots(self, snapshots: Dict[str, Dict[str, torch.Tensor]]) -> None:
        """f_D's stage-1 snapshots (``biased.snapshots``), what ``finetune.rewind = "stage1"`` rewinds to."""
        if self.writes:
            save_checkpoint(self.recorder.checkpoint("stage1_snapshots"), {"snapshots": snapshots})

    def reuse_stage1(self, resume: Optional[Dict[str, Any]], models: List[nn.Module]) -> Tuple[Dict[str, Any], Any]:
        """Stage 1's body with ``stage1_from``: another run's stage 1 (checked to match by
        ``check_stage1_source``), saved as this run's own."""
        source = self.config.stage1_from
        assert source is not None
        state = RunRecorder(source).load(BIASED.done_file)  # type: ignore[arg-type]
        assert state is not None  # checked before the run folder was created
        state = {k: state.get(k) for k in ("model_d", "model_b", "vanilla", "pseudo_scores", "vanilla_best_valid")}
        self.rt.log({"stage": "vanilla", "stage1_from": os.path.abspath(source), **state["vanilla"]})
        snapshots = RunRecorder(source).load("stage1_snapshots")
        if snapshots is not None:
            self.save_snapshots(snapshots["snapshots"])
        return state, self.with_models(state)

    def with_models(self, state: Dict[str, Any]) -> Dict[str, Any]:
        """A stage-1 checkpoint with f_D and f_B built and loaded from it."""
        model_d, model_b = self.new_model(), self.new_model()
        model_d.load_state_dict(state["model_d"])
        model_b.load_state_dict(state["model_b"])
        return {**state, "model_d": model_d, "model_b": model_b}

    # stage 2 ---------------------------------------------------------------------------------
    def mining(self, model_b: nn.Module, pseudo: torch.Tensor) -> MinedSet:
        return self.run_stage(MINING, lambda _: self.mine(model_b, pseudo), lambda saved: saved["mined"])

    def mine(self, model_b: nn.Module, pseudo: torch.Tensor) -> Tuple[Dict[str, Any], MinedSet]:
        train = self.data.train
        mined = mine_conflicting(
            self.config.mining.method,
            train.ids,
            labels_loader=self.loaders.eval(self.data.train_scoring),
            model_b=model_b,
            pseudo_scores=pseudo if len(pseudo) else None,
            tau=self.config.mining.tau,
            truth=train.conflicting,
            runtime=self.rt,
        )
        self.rt.log(
            {
                "stage": "mining",
                "count": mined.count,
                "precision": mined.precision,
                "recall": mined.recall,
                "true_conflicting": int(train.conflicting.sum()),
                "num_samples": len(train),
            }
        )
        return {"mined": mined}, mined

    # stage 3 ---------------------------------------------------------------------------------
    def mask(self, model_d: nn.Module, mined: MinedSet) -> MaskScores:
        def restore(saved: Dict[str, Any]) -> MaskScores:
            model_d.load_state_dict(saved["model"])
            return MaskScores(saved["scores"], model=model_d)

        return self.run_stage(MASK, lambda resume: self.learn_mask(model_d, mined, resume), restore)

    def learn_mask(
        self, model_d: nn.Module, mined: MinedSet, resume: Optional[Dict[str, Any]]
    ) -> Tuple[Dict[str, Any], MaskScores]:
        c = self.config
        weights = upweight(self.data_flags(mined), self.variant["mask_upweight"])

        def on_eval(it: int, scores: MaskScores) -> Dict[str, Any]:
            return self.loaders.evaluate(model_d, ("valid",))

        scores = learn_mask_scores(
            model_d,
            self.loaders.train(3, int(resume["iteration"]) if resume else 0, weights),
            mined.flags_for,
            c.mask.replace(
                gumbel=self.variant["gumbel"],
                positives=self.variant["positives"],
                lambda_con=self.variant["mask_lambda_con"],
            ),
            self.rt,
            resume=resume,
            on_eval=on_eval,
        )
        scores.bind(model_d)
        if self.writes:
            scores.save(os.path.join(c.out, "scores.safetensors"))
        return {"model": model_d.state_dict(), "scores": scores.state_dict()}, scores

    def data_flags(self, mined: MinedSet) -> torch.Tensor:
        return mined.flags_for(self.data.train.ids)

    # prune -----------------------------------------------------------------------------------
    def prune(self, model: nn.Module, scores: MaskScores) -> Optional[Dict[str, Any]]:
        p = self.config.prune
        if p.structured:
            from ..adapters.structured import prune_channels

            example = self.data.valid[0].image.unsqueeze(0).to(self.rt.device)
            try:
                result = prune_channels(model, scores, example, **p.channel_options())
            except ValueError as err:
                if p.target_macs is None or not self.writes:
                    raise
                raise InputError(
                    f"{err}. The learned scores are saved (stage 3 is done): continue with --resume "
                    f"--out {self.config.out} --force-config and a larger --pruning-ratio (or a smaller "
                    "--target-macs)"
                ) from None
            info = dict(result.to_dict(), history=result.history)
        else:
            dcwp_global_unstructured(model, scores.probs(), **p.rule())
            info = None
            if p.shuffle:  # the random-mask control: the same count per tensor at random positions
                shuffle_masks(model, torch.Generator().manual_seed(stage_seed(self.config.seed, 2)))
        self.rt.log(
            {
                "stage": "prune",
                "structured": p.structured,
                "sparsity": self.sparsity(model, scores),
                **({k: v for k, v in info.items() if k != "history"} if info else {}),
            }
        )
        return info

    def sparsity(self, model: nn.Module, scores: MaskScores) -> float:
        if self.config.prune.structured:
            return float(scores.sparsity())
        return float(pruned_sparsity(model))

    # stage 4 ---------------------------------------------------------------------------------
    def finetune(self, model: nn.Module, mined: MinedSet, model_b: Optional[nn.Module] = None) -> Dict[str, Any]:
        rewind = self.variant["rewind"]  # auto: this arm fine-tunes the trained f_D, retrain() the rewound one
        return self.train_stage4(FINETUNE, model, mined, model_b, None if rewind in ("none", "auto") else rewind)

    def train_stage4(
        self, stage: Stage, model: nn.Module, mined: MinedSet, model_b: Optional[nn.Module], rewind: Optional[str]
    ) -> Dict[str, Any]:
        """Stage 4 (or DCWP+'s ``retrain`` arm): the pruned ``model`` rewound first when ``rewind`` names how
        (not when resuming mid-stage), retrained with the mined samples upweighted, evaluated on valid."""

        def restore(saved: Dict[str, Any]) -> Dict[str, Any]:
            model.load_state_dict(saved["model"])
            return saved

        return self.run_stage(
            stage, lambda resume: self.retrain_pruned(stage, model, mined, model_b, rewind, resume), restore
        )

    def retrain_pruned(
        self,
        stage: Stage,
        model: nn.Module,
        mined: MinedSet,
        model_b: Optional[nn.Module],
        rewind: Optional[str],
        resume: Optional[Dict[str, Any]],
    ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        c = self.config
        if rewind is not None and resume is None:
            self.rewind(model, rewind)
        weights = upweight(self.data_flags(mined), c.finetune.upweight)
        out = finetune(
            model,
            self.loaders.train(4, int(resume["iteration"]) if resume else 0, weights),
            mined.flags_for,
            c.finetune.replace(
                positives=c.finetune.positives or self.variant["positives"],
                lambda_con=self.variant["finetune_lambda_con"],
            ),
            self.rt,
            evaluate_fn=self.loaders.evaluate,
            select_metric=self.select_metric,
            resume=resume,
            bias_model=model_b if c.finetune.logit_correction > 0 else None,
            name=stage.name,
        )
        state = {"model": model.state_dict(), **out}
        return state, state

    def retrain(
        self, model: nn.Module, mined: MinedSet, model_b: Optional[nn.Module], tuned: Dict[str, Any]
    ) -> Dict[str, Any]:
        """DCWP+'s second arm (``finetune.rewind = "auto"``): the pruned ``model`` rewound to its stage-1
        snapshot and retrained exactly as stage 4; then the arm whose best iterate is better on valid is kept
        (``model`` holds that arm's last iterate). Returns the kept arm's stage-4 state, with both arms'
        best-on-valid metrics under ``arms`` and the choice under ``chosen``."""
        # arm 1's saved state aliases the model's tensors, which arm 2 rewinds in place: keep a copy
        tuned = {**tuned, "model": {k: v.detach().clone() for k, v in tuned["model"].items()}}
        done = self.train_stage4(RETRAIN, model, mined, model_b, "stage1")

        def score(state: Dict[str, Any]) -> float:
            best = state.get("best")
            return float(best["valid"][self.select_metric]) if best else float("-inf")

        chosen = "rewound" if score(done) > score(tuned) else "finetuned"  # ties keep the trained f_D
        kept = done if chosen == "rewound" else tuned
        model.load_state_dict(kept["model"])
        arms = {name: state.get("best") for name, state in (("finetuned", tuned), ("rewound", done))}
        self.rt.log(
            {
                "stage": "retrain_choice",
                "chosen": chosen,
                "metric": self.select_metric,
                **{f"{k}_valid": score(s) for k, s in (("finetuned", tuned), ("rewound", done))},
            }
        )
        return {**kept, "arms": arms, "chosen": chosen}

    def rewind(self, model: nn.Module, how: str) -> None:
        """Reset the surviving weights of the pruned ``model`` (its masks stay) before stage 4."""
        from ..training.biased import snapshot_key
        from ..training.rewind import rewind_weights

        c = self.config
        if how == "fresh":  # a new initialisation, drawn without touching the stage's RNG
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(stage_seed(c.seed, 3) + 500)
                state = self.new_model().state_dict()
        else:
            key = snapshot_key(self.variant["rewind_point"])
            snapshots = (self.recorder.load("stage1_snapshots") or {}).get("snapshots", {})
            if key not in snapshots:
                raise InputError(
                    f"finetune.rewind = 'stage1' needs f_D's stage-1 snapshot at {key} of its schedule, and "
                    f"this run's stage 1 kept {sorted(snapshots) or 'none'} (checkpoints/stage1_snapshots.pt; "
                    "a stage 1 of an earlier release keeps none): run stage 1 again (a new --out without "
                    "--stage1-from), or --rewind fresh"
                )
            state = snapshots[key]
        info = rewind_weights(model, state)
        self.rt.log(
            {"stage": "rewind", "to": how, "point": self.variant["rewind_point"] if how == "stage1" else None, **info}
        )

    # stage 5 ---------------------------------------------------------------------------------
    def final(
        self,
        model: nn.Module,
        tuned: Dict[str, Any],
        vanilla: Dict[str, Any],
        vanilla_best: Optional[Dict[str, Any]] = None,
    ) -> Dict[str, Dict[str, Any]]:
        return self.run_stage(FINAL, lambda _: ({}, self.evaluate_final(model, tuned, vanilla, vanilla_best)), dict)

    def evaluate_final(
        self,
        model: nn.Module,
        tuned: Dict[str, Any],
        vanilla: Dict[str, Any],
        vanilla_best: Optional[Dict[str, Any]],
    ) -> Dict[str, Dict[str, Any]]:
        metrics = {"vanilla": vanilla, "dcwp_last": self.loaders.evaluate(model)}
        for arm, best in (tuned.get("arms") or {}).items():  # DCWP+: both arms' best-on-valid iterates
            if best is not None:
                metrics[f"{arm}_best_valid"] = best_summary(best)
        if vanilla_best is not None:  # f_D's (ERM's) best-on-valid iterate in stage 1, metrics only
            metrics["vanilla_best_valid"] = vanilla_best
        if tuned.get("best") is not None:
            metrics["dcwp_best_valid"] = best_summary(tuned["best"])
        self.rt.log({"stage": "final", **{k: v for k, v in metrics.items()}})
        return metrics


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
        config = _resume_config(config, saved, len(data.train), force_config)
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
    _check_model_fits(create_model(config.model, data.num_classes, weights=config.weights).to(rt.device), data, config)
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
    run = _Run(config, rt, data, recorder)
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
