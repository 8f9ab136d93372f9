"""The methods of the benchmark harness: DCWP variants through ``run_dcwp``, baselines on its engine.

Every method runs on the same data, models, schedules and evaluation as DCWP:

- ``dcwp-official`` / ``dcwp-clean`` / ``dcwp-structured`` / ``mrm`` and the ablations are
  ``run_dcwp`` configs (a CLI run folder each); all but the group's first run start from that run's
  stage 1 (``stage1_from``), so they differ only in what they do after the trained network.
- ``erm``: the group's stage-1 f_D (plain cross-entropy, the same schedule), evaluated.
- ``magnitude`` / ``random``: f_D pruned (``torch.nn.utils.prune`` L1 / random, global) to the sparsity
  ``dcwp-official`` reached, then fine-tuned exactly as DCWP's stage 4 (same mined set, upweighting,
  contrastive term and schedule): only the choice of weights differs.
- ``structured-magnitude`` / ``structured-random``: the same for channels: f_D's channels ranked by
  weight magnitude or at random, pruned to ``dcwp-structured``'s MACs target, DCWP's stage 4;
  ``structured-random-local``: random within each layer, the control of ``dcwp-structured-local``.
- ``lff``: Learning from Failure (Nam et al. 2020) on :class:`~dcwp_prune.training.engine.Engine`.
- ``jtt``: Just Train Twice (Liu et al. 2021): an ERM identification model for f_B's schedule, its
  errors (``mine_conflicting("wrong")``) upweighted by lambda_up, a fresh model trained for f_D's.
- ``lc``: Logit Correction (Liu et al. 2023), a peer, as its official code runs it on Colored MNIST
  (``benchmarks/lc.py``; what differs and why is said there).
- ``denetdm``: DeNetDM (Sreelatha et al. 2024), a peer, as its official code runs it on Colored MNIST
  (``benchmarks/denetdm.py``: how its deep and shallow branches map onto the backbones, what differs, why).
- ``sweep-*``: the mask on trial. The group's f_D pruned with DCWP's learned scores, by weight magnitude
  or at random to fixed total sparsities (``sweep-scores-90``) or MACs reductions with channels ranked
  within each layer (``sweep-structured-random-4x``), then exactly DCWP's stage 4: only the choice of
  weights differs between the three at each level.

A baseline writes its cell folder with the CLI's file names (``config.json``, ``metrics.jsonl``,
``model.safetensors`` + ``model.json``, ``results.json``), into a temporary folder renamed at the end.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import prune

from dcwp_prune.adapters.torch_prune import pruned_sparsity
from dcwp_prune.data import dataset_spec
from dcwp_prune.models import create_model
from dcwp_prune.run.config import RunConfig
from dcwp_prune.run.pipeline import RunLoaders, load_run_data, resolve_data, seed_everything, stage_seed
from dcwp_prune.run.presets import quick_schedule
from dcwp_prune.run.records import RunRecorder
from dcwp_prune.scores import MaskScores
from dcwp_prune.training.biased import BiasedTrainConfig, train_biased_model
from dcwp_prune.training.engine import Engine, Runtime, resolve_device, unpack
from dcwp_prune.training.finetune import finetune
from dcwp_prune.training.mining import MinedSet, mine_conflicting
from dcwp_prune.training.objectives import gce_loss
from dcwp_prune.training.sampling import upweight
from dcwp_prune.training.selection import BestOnValid, best_summary

__all__ = [
    "BASELINES",
    "DCWP_CONFIGS",
    "SCHEDULE_OVERRIDES",
    "SWEEP",
    "SWEEP_KINDS",
    "SWEEP_MACS",
    "SWEEP_SPARSITIES",
    "Cell",
    "lff_weights",
    "run_baseline",
    "sweep_name",
    "train_lff",
]

#: Methods (and ablations) that are ``run_dcwp`` configs: the overrides applied to the cell's config.
DCWP_CONFIGS: Dict[str, Dict[str, Any]] = {
    "dcwp-official": {"variant": "official"},
    "dcwp-clean": {"variant": "clean"},
    # channels removed until the MACs are halved (the smallest Torch-Pruning ratio up to 0.6 that does it)
    # (one global ranking across layers: the library's default until the per-layer ranking won on this table)
    "dcwp-structured": {
        "variant": "official",
        "prune": {"structured": True, "pruning_ratio": 0.6, "target_macs": 2.0, "global_pruning": True},
    },
    # the same target, one global ranking after dividing each layer's channel importances by their mean (it no
    # longer singles out the MLP's first layer, where its MACs are: halving them there takes ratios up to ~0.6)
    "dcwp-structured-meannorm": {
        "variant": "official",
        "prune": {
            "structured": True,
            "pruning_ratio": 0.9,
            "target_macs": 2.0,
            "normalizer": "mean",
            "global_pruning": True,
        },
    },
    # the same target with channels ranked within each layer (every layer loses the same fraction; the default)
    "dcwp-structured-local": {
        "variant": "official",
        "prune": {"structured": True, "pruning_ratio": 0.6, "target_macs": 2.0, "global_pruning": False},
    },
    # MRM: the mask learned with plain CE on uniform batches, fine-tuned with plain CE
    "mrm": {
        "variant": "official",
        "mask": {"upweight": 1.0, "lambda_con": 0.0},
        "finetune": {"upweight": 1.0, "lambda_con": 0.0},
    },
    # ablations of DCWP (official)
    "abl-mining-oracle": {"mining": {"method": "oracle"}},
    "abl-mining-ensemble": {"mining": {"method": "ensemble"}, "biased": {"loss": "confident_ce"}},
    "abl-no-contrastive": {"mask": {"lambda_con": 0.0}, "finetune": {"lambda_con": 0.0}},
    "abl-no-upweight": {"mask": {"upweight": 1.0}, "finetune": {"upweight": 1.0}},
    "abl-no-sparsity": {"mask": {"lambda_sparse": 0.0}},
    # official with bf16 autocast on the CPU, every stage (stage 1 too: it trains its own)
    "official-cpu-bf16": {"variant": "official", "cpu_amp": True},
    # official with clean's selection: the fine-tuning iterate best on valid (training is official's, unchanged)
    "official-select-best-valid": {"variant": "official", "finetune": {"select": "best_valid"}},
    # the clean variant, one of its settings put back to official at a time (which one costs what)
    "clean-gumbel-official": {"variant": "clean", "mask": {"gumbel": "official"}},
    "clean-positives-official": {
        "variant": "clean",
        "mask": {"positives": "official"},
        "finetune": {"positives": "official"},
    },
    "clean-mask-upweight-80": {"variant": "clean", "mask": {"upweight": 80.0}},
    # a clean fix: Adam moves a logit that gets no task gradient by about lr * lambda / (lambda + eps) a step
    # (docs/design.md, "the mask logits' drift"), so the whole stage's drift grows with its length: 2000 official
    # steps at lr 1e-2 move it ~10 on Colored MNIST, the 400 quick steps ~2. lr x5 restores the official drift.
    "clean-fix-mask-drift": {"variant": "clean", "mask": {"lr": 5e-2}},
    # a clean fix: the official form samples m ~ Bernoulli(sigmoid(sigmoid(pi))), so every weight starts kept with
    # probability 0.69 (pi = 1.5) and never above 0.73; the textbook form starts at sigmoid(1.5) = 0.82. Starting
    # the logits at sigmoid(1.5) gives the textbook form the official starting keep probability (0.69)
    "clean-fix-init-keep": {"variant": "clean", "mask": {"init": 0.8176}},
    # a clean fix: at low conflict ratios the upweighted fine-tuning overfits the few mined images, and
    # valid accuracy peaks before the first evaluation of the schedule (one epoch in); evaluating four
    # times as often lets the best-on-valid selection see the peak
    "clean-fix-early-select": {"variant": "clean"},
    # DCWP+ (--variant plus) and its random-mask control: the same runs with each layer's kept weights drawn at
    # random (its sparsity kept), so the difference is what the learned mask adds
    "dcwp-plus": {"variant": "plus"},
    "dcwp-plus-shuffle": {"variant": "plus", "prune": {"shuffle": True}},
    # the DCWP+ candidates (issue 21), each alone on top of official with the best-on-valid selection
    # (official-select-best-valid is their reference), then combined; chosen on valid, reported on test
    "plus-rewind-init": {
        "variant": "official",
        "finetune": {"select": "best_valid", "rewind": "stage1", "rewind_point": 0.0},
    },
    "plus-rewind-early": {
        "variant": "official",
        "finetune": {"select": "best_valid", "rewind": "stage1", "rewind_point": 0.1},
    },
    "plus-rewind-fresh": {"variant": "official", "finetune": {"select": "best_valid", "rewind": "fresh"}},
    # the random-mask control of the rewind: the same per-layer sparsity, kept weights drawn at random
    "plus-rewind-init-shuffle": {
        "variant": "official",
        "prune": {"shuffle": True},
        "finetune": {"select": "best_valid", "rewind": "stage1", "rewind_point": 0.0},
    },
    "plus-con-0.2": {
        "variant": "official",
        "mask": {"lambda_con": 0.2},
        "finetune": {"select": "best_valid", "lambda_con": 0.2},
    },
    "plus-mask-drift": {"variant": "official", "mask": {"lr": 5e-2}, "finetune": {"select": "best_valid"}},
    # a bias-corrected loss after rewinding (Logit Correction's idea; it changes nothing on the memorised f_D of
    # official's stage 4, where no gradient is left): eta 0.5 and 1, chosen on valid
    "plus-rewind-init-lc-0.5": {
        "variant": "official",
        "finetune": {"select": "best_valid", "rewind": "stage1", "rewind_point": 0.0, "logit_correction": 0.5},
    },
    "plus-rewind-init-lc-1": {
        "variant": "official",
        "finetune": {"select": "best_valid", "rewind": "stage1", "rewind_point": 0.0, "logit_correction": 1.0},
    },
    # DCWP+ with the mask schedule that restores the official logit drift (gained on valid alone; not in the variant)
    "plus-with-mask-drift": {"variant": "plus", "mask": {"lr": 5e-2}},
    # candidate 4's ceiling: DCWP+ with the true bias-conflicting set (uses bias labels: a bound, not a method)
    "plus-mining-oracle": {"variant": "plus", "mining": {"method": "oracle"}},
    # candidate 4, f_B trained longer: DCWP+ as it was before this joined the variant (f_B at its schedule's length)
    # and with f_B at twice it, each with its own stage 1 (plus-fb-longer, recorded before the variant took it, is
    # the same run as today's dcwp-plus)
    "plus-fb-1x": {"variant": "plus", "biased": {"biased_length": 1.0}},
    # DCWP+ as a structured method (issue 21: within 3 points of its unstructured form at 2x fewer MACs): channels
    # ranked within each layer to halve the MACs; both stage-4 arms, the rewound one reset to the kept channels'
    # initial weights, the better on valid kept
    "dcwp-plus-structured": {
        "variant": "plus",
        "prune": {"structured": True, "pruning_ratio": 0.6, "target_macs": 2.0, "global_pruning": False},
    },
    "plus-fb-longer": {"variant": "plus", "biased": {"biased_length": 2.0}},
    # the arm selection alone (DCWP+ without its contrastive weight)
    "plus-auto": {"variant": "official", "finetune": {"select": "best_valid", "rewind": "auto"}},
    # combinations of the candidates that gained on valid alone
    "plus-rewind-init-con-0.2": {
        "variant": "official",
        "mask": {"lambda_con": 0.2},
        "finetune": {"select": "best_valid", "rewind": "stage1", "rewind_point": 0.0, "lambda_con": 0.2},
    },
    "plus-rewind-fresh-con-0.2": {
        "variant": "official",
        "mask": {"lambda_con": 0.2},
        "finetune": {"select": "best_valid", "rewind": "fresh", "lambda_con": 0.2},
    },
}

#: Schedule fields a method sets after the schedule is derived (``--quick`` derives the evaluation cadence).
SCHEDULE_OVERRIDES: Dict[str, Dict[str, Any]] = {
    "clean-fix-early-select": {"finetune": {"eval_every": lambda every: max(1, every // 4)}},
}


@dataclass
class Cell:
    """One baseline run: its config (schedule derived), data, loaders and where it writes."""

    config: RunConfig
    out: str
    base: Optional[str]  # the group's dcwp-official run folder (stage 1, mined set, sparsity)

    def __post_init__(self) -> None:
        self.config = resolve_data(self.config)
        seed_everything(self.config.seed)
        self.rt = Runtime(device=resolve_device(self.config.device), amp=self.config.amp, progress=self.config.progress)
        self.data = load_run_data(self.config, "train")
        if self.config.quick:
            self.config = quick_schedule(self.config, len(self.data.train))
        self.loaders = RunLoaders(self.config, self.data, self.rt)
        self.tmp = self.out + ".partial"
        if os.path.isdir(self.tmp):  # a killed earlier attempt
            shutil.rmtree(self.tmp)
        os.makedirs(os.path.join(self.tmp, "checkpoints"))
        self.recorder = RunRecorder(self.tmp)
        self.rt = replace(self.rt, log_fn=self.recorder.log)
        self.select_metric = dataset_spec(self.config.data.name).select_metric
        self.eval_every = self.config.finetune.eval_every  # every method is evaluated at DCWP's stage-4 cadence

    def tracker(self, model: nn.Module) -> BestOnValid:
        """An evaluation of ``model`` on valid (and test, recorded) at stage 4's cadence; keeps the best iterate's
        metrics (chosen on valid only)."""
        return BestOnValid(
            model, self.loaders.evaluate, self.select_metric, keep_state=False, log=self.rt.log, stage="baseline"
        )

    def new_model(self) -> nn.Module:
        return create_model(self.config.model, self.data.num_classes, weights=self.config.weights).to(self.rt.device)

    def base_stage1(self) -> nn.Module:
        """The group's trained f_D (from the dcwp-official run's stage-1 checkpoint)."""
        state = RunRecorder(self.base).load("stage1_biased") if self.base else None
        if state is None:
            raise RuntimeError(f"the group's dcwp-official run {self.base!r} has no stage-1 checkpoint; run it first")
        model = self.new_model()
        model.load_state_dict(state["model_d"])
        return model

    def base_mined(self) -> MinedSet:
        return MinedSet.load(os.path.join(self.base, "mined.json"))  # type: ignore[arg-type]

    def finish(
        self, method: str, model: nn.Module, extra: Dict[str, Any], best: Optional[Dict[str, Any]] = None
    ) -> Dict[str, Any]:
        """Evaluate the last iterate, write the run folder's files, rename it into place. ``best``: the metrics
        of the method's best-on-valid iterate (``{"valid", "test", "iteration"}``), when it was evaluated."""
        from dcwp_prune._atomic import write_json
        from dcwp_prune.run.export import save_pruned_model

        metrics = {"last": self.loaders.evaluate(model.eval())}
        if best is not None:
            metrics["best_valid"] = best
        shape = list(self.data.valid[0].image.shape)
        write_json(os.path.join(self.tmp, "config.json"), dict(self.config.to_dict(), method=method))
        history = extra.pop("history", None)  # structured: what rebuilds the smaller model
        save_pruned_model(
            self.tmp,
            model,
            arch=self.config.model,
            num_classes=self.data.num_classes,
            input_shape=shape,
            history=history,
            extra={"selected": "last", "method": method},
        )
        result = {"method": method, "metrics": metrics, "selected": "last", **extra}
        write_json(os.path.join(self.tmp, "results.json"), result)
        if os.path.isdir(self.out):
            shutil.rmtree(self.out)
        os.replace(self.tmp, self.out)
        return result

    def train_batches(self, stage: int, weights: Optional[Tensor] = None) -> Any:
        return self.loaders.train(stage, 0, weights)


# ------------------------------------------------------------------------------ ERM
def erm(cell: Cell) -> Dict[str, Any]:
    """The group's stage-1 f_D as it is (plain CE training, the schedule every method shares); its best-on-valid
    iterate is the one stage 1 found evaluating f_D at stage 4's cadence (metrics only: the saved model is the last)."""
    from dcwp_prune.run.report import load_results

    best = (load_results(cell.base)["metrics"] or {}).get("vanilla_best_valid")  # type: ignore[arg-type]
    return cell.finish("erm", cell.base_stage1(), {"sparsity": 0.0}, best=best)


# ------------------------------------------------------------------------------ magnitude / random
def dcwp_finetune(cell: Cell, model: nn.Module) -> Optional[Dict[str, Any]]:
    """DCWP's stage 4 on ``model``: the group's mined set upweighted, the contrastive term, its schedule and seed;
    evaluated on valid at its cadence. The best-on-valid iterate's metrics (the model stays the last iterate)."""
    mined = cell.base_mined()
    weights = upweight(mined.flags_for(cell.data.train.ids), cell.config.finetune.upweight)
    seed_everything(stage_seed(cell.config.seed, 3))  # DCWP's fine-tuning seed
    cfg = cell.config.finetune.replace(positives=cell.config.finetune.positives or "official")
    out = finetune(
        model,
        cell.train_batches(4, weights),
        mined.flags_for,
        cfg,
        cell.rt,
        evaluate_fn=cell.loaders.evaluate,
        select_metric=cell.select_metric,
    )
    return best_summary(out.get("best"))


def pruned_baseline(cell: Cell, kind: str) -> Dict[str, Any]:
    """f_D pruned to dcwp-official's sparsity by weight magnitude or at random, then DCWP's stage 4."""
    from dcwp_prune.run.report import load_results

    base = load_results(cell.base)  # type: ignore[arg-type]
    sparsity = float(base["sparsity"])
    model = cell.base_stage1()
    scored = MaskScores.from_model(
        model, include=cell.config.mask.include or None, exclude=cell.config.mask.exclude or None
    )
    params = list(scored.resolve(model).values())
    seed_everything(stage_seed(cell.config.seed, 3))
    method = prune.L1Unstructured if kind == "magnitude" else prune.RandomUnstructured
    prune.global_unstructured(params, pruning_method=method, amount=sparsity)
    best = dcwp_finetune(cell, model)
    return cell.finish(kind, model, {"sparsity": float(pruned_sparsity(model)), "target_sparsity": sparsity}, best=best)


# ------------------------------------------------------------------------------ structured magnitude / random
def keep_scores(cell: Cell, model: nn.Module, kind: str) -> Any:
    """Keep scores of ``model``'s scored weights: DCWP's learned logits (from the group's dcwp-official run, the
    network they were learned on), ``|w| / max |w|`` per layer, or uniform noise (the cell's seed)."""
    if kind == "scores":
        return MaskScores.load(os.path.join(cell.base, "scores.safetensors"), model=model)  # type: ignore[arg-type]
    scored = MaskScores.from_model(
        model, include=cell.config.mask.include or None, exclude=cell.config.mask.exclude or None
    )
    gen = torch.Generator().manual_seed(stage_seed(cell.config.seed, 3))
    keep = {}
    for fqn, (module, name) in scored.resolve(model).items():
        w = getattr(module, name).detach().abs().float().cpu()
        keep[fqn] = w / w.max().clamp_min(1e-12) if kind == "magnitude" else torch.rand(w.shape, generator=gen)
    return keep


def structured_baseline(cell: Cell, kind: str, like: str = "dcwp-structured") -> Dict[str, Any]:
    """f_D's channels ranked by weight magnitude or at random instead of DCWP's scores, pruned through the
    same ``prune_channels`` call as the DCWP method ``like`` (``dcwp-structured``: global ranking;
    ``dcwp-structured-local``: within each layer; the same MACs target), then DCWP's stage 4.

    ``magnitude``: a weight's keep score is ``|w| / max |w|`` of its layer, so a channel's importance is the
    mean normalised magnitude of its coupled weights (``DCWPImportance`` averages keep scores);
    ``random``: uniform keep scores. Only the ranking differs from ``dcwp-structured``.
    """
    from dcwp_prune.adapters.structured import prune_channels

    p = cell.config.prune.replace(**DCWP_CONFIGS[like]["prune"])
    model = cell.base_stage1()
    keep = keep_scores(cell, model, kind)
    example = cell.data.valid[0].image.unsqueeze(0).to(cell.rt.device)
    result = prune_channels(model, keep, example, **p.channel_options())
    best = dcwp_finetune(cell, model)
    return cell.finish(
        f"structured-{kind}" + ("-local" if not p.global_pruning else ""),
        model,
        {
            "sparsity": 0.0,
            "history": result.history,
            "structured": {"macs_ratio": result.macs_ratio, "pruning_ratio": result.pruning_ratio},
        },
        best=best,
    )


# ------------------------------------------------------------------------------ the mask on trial: a sparsity sweep
#: Total sparsities of the scored weights (unstructured) and MACs reductions (structured, per-layer ranking).
SWEEP_SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)
SWEEP_MACS = (2.0, 4.0)
#: What ranks the weights: DCWP's learned scores (the group's dcwp-official run), weight magnitude, chance.
SWEEP_KINDS = ("scores", "magnitude", "random")


def sweep_name(kind: str, level: float, structured: bool) -> str:
    """``sweep-scores-90`` (90 % of the scored weights pruned) or ``sweep-structured-random-4x`` (4x fewer MACs)."""
    return f"sweep-structured-{kind}-{level:g}x" if structured else f"sweep-{kind}-{round(100 * level)}"


def sweep_unstructured(cell: Cell, kind: str, sparsity: float) -> Dict[str, Any]:
    """f_D (the group's stage 1) pruned to exactly ``sparsity`` of its scored weights, ranked by ``kind``
    (one global ranking, ``DCWPMethod``'s ``amount``), then exactly DCWP's stage 4."""
    from dcwp_prune.adapters.torch_prune import dcwp_global_unstructured

    model = cell.base_stage1()
    keep = keep_scores(cell, model, kind)
    probs = keep.probs() if isinstance(keep, MaskScores) else keep
    dcwp_global_unstructured(model, probs, amount=sparsity)
    reached = float(pruned_sparsity(model))
    kept = {
        f"{name}.weight": float(m.weight_mask.float().mean())
        for name, m in model.named_modules()
        if hasattr(m, "weight_mask")
    }
    best = dcwp_finetune(cell, model)
    return cell.finish(
        sweep_name(kind, sparsity, False),
        model,
        {"sparsity": reached, "kept": kept, "sweep": {"kind": kind, "structured": False, "level": sparsity}},
        best=best,
    )


def sweep_structured(cell: Cell, kind: str, macs: float) -> Dict[str, Any]:
    """f_D's channels ranked by ``kind`` within each layer, pruned to ``macs`` x fewer MACs (the smallest
    Torch-Pruning ratio up to 0.95 that reaches it), then exactly DCWP's stage 4."""
    from dcwp_prune.adapters.structured import prune_channels

    model = cell.base_stage1()
    keep = keep_scores(cell, model, kind)
    example = cell.data.valid[0].image.unsqueeze(0).to(cell.rt.device)
    result = prune_channels(model, keep, example, pruning_ratio=0.95, target_macs_ratio=macs, global_pruning=False)
    best = dcwp_finetune(cell, model)
    return cell.finish(
        sweep_name(kind, macs, True),
        model,
        {
            "sparsity": 0.0,
            "history": result.history,
            "structured": {"macs_ratio": result.macs_ratio, "pruning_ratio": result.pruning_ratio},
            "sweep": {"kind": kind, "structured": True, "level": macs},
        },
        best=best,
    )


SWEEP: Dict[str, Callable[[Cell], Dict[str, Any]]] = {
    **{
        sweep_name(k, s, False): (lambda cell, k=k, s=s: sweep_unstructured(cell, k, s))
        for k in SWEEP_KINDS
        for s in SWEEP_SPARSITIES
    },
    **{
        sweep_name(k, m, True): (lambda cell, k=k, m=m: sweep_structured(cell, k, m))
        for k in SWEEP_KINDS
        for m in SWEEP_MACS
    },
}


# ------------------------------------------------------------------------------ LfF
def lff_weights(ema_b: Tensor, ema_d: Tensor, labels: Tensor, idx: Tensor, num_classes: int) -> Tensor:
    """LfF's relative difficulty ``w = L_B / (L_B + L_D)`` of samples ``idx``, each EMA loss normalised by
    its class maximum: near 1 where the biased model fails and the debiased one does not."""
    norm = []
    for ema in (ema_b, ema_d):
        class_max = torch.zeros(num_classes).scatter_reduce_(0, labels, ema, "amax", include_self=False)
        norm.append(ema[idx] / class_max[labels[idx]].clamp_min(1e-8))
    return norm[0] / (norm[0] + norm[1] + 1e-8)


def train_lff(
    model_d: nn.Module,
    model_b: nn.Module,
    batches: Any,
    index_of: Callable[[Any], Tensor],
    labels: Tensor,
    cfg: BiasedTrainConfig,
    runtime: Runtime,
    ema_alpha: float = 0.7,
    *,
    on_eval: Optional[Callable[[int], Any]] = None,
    eval_every: int = 0,
) -> None:
    """Learning from Failure: f_B with GCE, f_D with CE weighted by the relative difficulty score.

    ``w(x) = L_B(x) / (L_B(x) + L_D(x))`` from per-sample EMAs (``ema_alpha``) of both models' CE
    losses, each normalised by its class maximum, as in LfF's official code. Both models follow
    f_D's schedule of ``cfg``. ``on_eval(iteration)`` every ``eval_every`` steps (f_D's selection).
    """
    iters, optimizer, lr, weight_decay, decay_step, gamma = cfg.schedule("d")
    engine = Engine("lff", runtime, iters, eval_every=eval_every)
    n, c = len(labels), int(labels.max()) + 1
    ema = {"d": torch.zeros(n), "b": torch.zeros(n)}
    forwards = {}
    for key, model in (("d", model_d), ("b", model_b)):
        model.train()
        engine.track(f"model_{key}", model)
        engine.optimizer(key, model.parameters(), optimizer, lr, weight_decay, decay_step=decay_step, gamma=gamma)
        engine.track(f"ema_{key}", get=lambda key=key: ema[key], set=lambda v, key=key: ema[key].copy_(v))
        forwards[key] = engine.prepare(model)
    dev = runtime.device

    def step(it: int) -> Dict[str, Tensor]:
        x, y, _, ids = unpack(next(batches))
        idx = index_of(ids)
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with runtime.autocast():
            logits = {k: f(x).float() for k, f in forwards.items()}
        ce = {k: F.cross_entropy(v, y, reduction="none") for k, v in logits.items()}
        for k in ("d", "b"):
            ema[k][idx] = ema_alpha * ema[k][idx] + (1 - ema_alpha) * ce[k].detach().float().cpu()
        w = lff_weights(ema["b"], ema["d"], labels, idx, c).to(dev)
        return {
            "loss_d": engine.update((ce["d"] * w).mean(), "d"),
            "loss_b": engine.update(gce_loss(logits["b"], y, cfg.q), "b"),
        }

    engine.run(step, on_eval)


def lff(cell: Cell) -> Dict[str, Any]:
    seed_everything(stage_seed(cell.config.seed, 0))
    model_d, model_b = cell.new_model(), cell.new_model()
    index = {i: k for k, i in enumerate(cell.data.train.ids)}
    tracker = cell.tracker(model_d)
    train_lff(
        model_d,
        model_b,
        cell.train_batches(1),
        lambda ids: torch.tensor([index[i] for i in ids]),
        cell.data.train.label_tensor,
        cell.config.biased,
        cell.rt,
        on_eval=tracker,
        eval_every=cell.eval_every,
    )
    return cell.finish("lff", model_d, {"sparsity": 0.0}, best=tracker.summary())


# ------------------------------------------------------------------------------ JTT
def jtt(cell: Cell) -> Dict[str, Any]:
    """ERM for f_B's schedule identifies the errors; a fresh model trains with them upweighted (lambda_up)."""
    c = cell.config
    seed_everything(stage_seed(c.seed, 0))
    ident, final = cell.new_model(), cell.new_model()
    b_iters, b_opt, b_lr, b_wd, b_step, b_gamma = c.biased.schedule("b")
    ident_cfg = c.biased.replace(
        iterations=b_iters, optimizer=b_opt, lr=b_lr, weight_decay=b_wd, lr_decay_step=b_step, lr_gamma=b_gamma
    )
    train_biased_model(None, cell.train_batches(1), ident_cfg.replace(snapshots=()), cell.rt, model_d=ident)
    errors = mine_conflicting(
        "wrong",
        cell.data.train.ids,
        labels_loader=cell.loaders.eval(cell.data.train_scoring),
        model_b=ident,
        truth=cell.data.train.conflicting,
        runtime=cell.rt,
    )
    cell.rt.log({"stage": "mining", "count": errors.count, "precision": errors.precision, "recall": errors.recall})
    seed_everything(stage_seed(c.seed, 3))
    weights = upweight(errors.flags_for(cell.data.train.ids), c.finetune.upweight)
    out = train_biased_model(
        None,
        cell.train_batches(4, weights),
        c.biased.replace(snapshots=()),
        cell.rt,
        model_d=final,
        evaluate_fn=cell.loaders.evaluate,
        eval_every=cell.eval_every,
        select_metric=cell.select_metric,
    )
    return cell.finish(
        "jtt",
        final,
        {"sparsity": 0.0, "mined": {"count": errors.count, "precision": errors.precision, "recall": errors.recall}},
        best=out["best_d"],
    )


# ------------------------------------------------------------------------------ LC (a peer)
def lc(cell: Cell) -> Dict[str, Any]:
    """Logit Correction (``benchmarks/lc.py``): f_D and a GCE f_B trained jointly for f_D's schedule."""
    from benchmarks.lc import train_lc

    seed_everything(stage_seed(cell.config.seed, 0))
    model_d, model_b = cell.new_model(), cell.new_model()
    tracker = cell.tracker(model_d)
    train_lc(
        model_d,
        model_b,
        cell.train_batches(1),
        cell.data.num_classes,
        cell.config.biased.iterations,
        cell.rt,
        seed=stage_seed(cell.config.seed, 5),
        on_eval=tracker,
        eval_every=cell.eval_every,
    )
    return cell.finish("lc", model_d, {"sparsity": 0.0}, best=tracker.summary())


# ------------------------------------------------------------------------------ DeNetDM (a peer)
def denetdm(cell: Cell) -> Dict[str, Any]:
    """DeNetDM (``benchmarks/denetdm.py``): the deep / shallow experts for f_D's schedule, then the target for
    as long."""
    from benchmarks.denetdm import train_experts, train_target

    seed_everything(stage_seed(cell.config.seed, 0))
    iters = cell.config.biased.iterations
    experts = train_experts(cell.new_model, cell.config.model, cell.train_batches(1), iters, cell.rt)
    seed_everything(stage_seed(cell.config.seed, 3))
    trackers = []
    target = train_target(
        experts,
        cell.new_model,
        cell.train_batches(4),
        iters,
        cell.rt,
        selector=lambda view: trackers.append(cell.tracker(view)) or trackers[-1],
        eval_every=cell.eval_every,
    )
    bias_expert = cell.loaders.evaluate(nn.Sequential(experts.deep, experts.head).eval())
    return cell.finish(
        "denetdm",
        target,
        {
            "sparsity": 0.0,
            "bias_expert": {
                s: {k: bias_expert[s][k] for k in ("accuracy", "aligned", "conflicting")} for s in ("valid", "test")
            },
        },
        best=trackers[0].summary(),
    )


BASELINES: Dict[str, Callable[[Cell], Dict[str, Any]]] = {
    "erm": erm,
    "magnitude": lambda cell: pruned_baseline(cell, "magnitude"),
    "random": lambda cell: pruned_baseline(cell, "random"),
    "structured-magnitude": lambda cell: structured_baseline(cell, "magnitude"),
    "structured-random": lambda cell: structured_baseline(cell, "random"),
    "structured-random-local": lambda cell: structured_baseline(cell, "random", "dcwp-structured-local"),
    "lff": lff,
    "jtt": jtt,
    "lc": lc,
    "denetdm": denetdm,
    **SWEEP,
}


def run_baseline(method: str, config: RunConfig, out: str, base: Optional[str]) -> Dict[str, Any]:
    """Run baseline ``method`` into ``out``; its result dict (``metrics['last']``, sparsity, ...)."""
    start = time.perf_counter()
    cell = Cell(config, out, base)
    result = BASELINES[method](cell)
    result["wall_s"] = time.perf_counter() - start
    return result
