"""The run config: which data, which model, every stage's config, and how the run executes.

Each stage's config lives beside its stage (``dcwp_prune.training``); this module bundles them with
the data and prune options. Defaults follow the official code (``main.py`` and ``script/train_ours_*.sh``);
``presets`` holds the per-dataset values. ``None`` means "decided by the variant" (or, for
``data.ratio``, the dataset's default ratio).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Optional, Tuple

from ..data.cmnist import DigitSource
from ..data.folders import TestProtocol
from ..errors import InputError
from ..options import ConfigError, Options, choices
from ..scores import Normalizer
from ..training.biased import BiasedTrainConfig
from ..training.finetune import FinetuneConfig
from ..training.mask import MaskLearnConfig
from ..training.mining import MiningConfig
from ..training.objectives import LAMBDA_CON

__all__ = [
    "PRUNE_RULES",
    "VARIANTS",
    "VARIANT_SETTINGS",
    "DataConfig",
    "PruneConfig",
    "RunConfig",
    "Variant",
    "expand_paths",
    "resolve_variant",
    "validate",
]

#: The ways to set the unstructured pruning level (at most one per run).
PRUNE_RULES = ("amount", "sparsity", "threshold")
#: ``official``: the official code's behaviour; ``clean``: its quirks fixed; ``plus``: the settings that measured
#: best in the benchmark harness (see ``resolve_variant`` and ``VARIANT_SETTINGS``).
Variant = Literal["official", "clean", "plus"]
VARIANTS: Tuple[str, ...] = choices(Variant)


@dataclass(frozen=True)
class DataConfig(Options):
    """Which data, how it is loaded. ``ratio`` is the conflict ratio in percent (None: the dataset's default)."""

    name: str = "cmnist"
    root: Optional[str] = None
    ratio: Optional[float] = None
    source: DigitSource = "auto"  # cmnist digits
    mnist_root: Optional[str] = None
    image_size: Optional[int] = None
    batch_size: int = 256
    eval_batch_size: int = 512
    num_workers: int = 0
    valid_fraction: float = 0.1
    test_protocol: TestProtocol = "full"  # bffhq: full (DCWP) | conflicting (DisEnt)
    skip_corrupt: bool = False  # drop unreadable images (counted) instead of failing
    options: Dict[str, Any] = field(default_factory=dict)  # the dataset's own options (csv: path_col, ...)


@dataclass(frozen=True)
class PruneConfig(Options):
    """How the learned scores become a subnetwork.

    Unstructured (default): DCWP's rule ``logit >= 0``, or one of ``amount`` / ``sparsity`` /
    ``threshold`` through ``DCWPMethod``. Structured: ``pruning_ratio`` of channels through
    Torch-Pruning with ``DCWPImportance``, or with ``target_macs`` the smallest ratio up to
    ``pruning_ratio`` that divides the MACs by ``target_macs`` (``prune_channels(target_macs_ratio=)``).
    """

    structured: bool = False
    amount: Optional[float] = None
    sparsity: Optional[float] = None
    threshold: Optional[float] = None
    pruning_ratio: float = 0.5
    round_to: Optional[int] = None
    global_pruning: bool = False  # structured: one channel ranking across layers (True) or per layer
    iterative_steps: int = 1  # structured: reach pruning_ratio in this many steps
    target_macs: Optional[float] = None  # structured: the smallest ratio <= pruning_ratio with this MACs reduction
    normalizer: Optional[Normalizer] = None  # structured: per-layer normalisation before a global ranking
    shuffle: bool = False  # control: each tensor's kept weights re-drawn at random (its sparsity kept); unstructured

    def rule(self) -> Dict[str, float]:
        """The unstructured rule as ``dcwp_global_unstructured`` keywords: the one of :data:`PRUNE_RULES`
        that is set, else DCWP's own ``threshold=0.5`` (keep ``logit >= 0``)."""
        given = {k: getattr(self, k) for k in PRUNE_RULES if getattr(self, k) is not None}
        return given or {"threshold": 0.5}

    def channel_options(self) -> Dict[str, Any]:
        """The structured pruning as ``prune_channels`` keywords (the ratio or MACs target, the ranking)."""
        return {
            "pruning_ratio": self.pruning_ratio,
            "target_macs_ratio": self.target_macs,
            "global_pruning": self.global_pruning,
            "round_to": self.round_to,
            "iterative_steps": self.iterative_steps,
            "normalizer": self.normalizer,
        }


@dataclass(frozen=True)
class RunConfig(Options):
    """Everything one DCWP run needs."""

    model: str = "cnn"
    weights: Optional[str] = None
    model_file: Optional[str] = None  # a trained f_D (state dict): skip its training
    stage1_from: Optional[str] = None  # a run folder whose finished stage 1 (f_D, f_B) this run starts from
    data: DataConfig = field(default_factory=DataConfig)
    biased: BiasedTrainConfig = field(default_factory=BiasedTrainConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    mask: MaskLearnConfig = field(default_factory=MaskLearnConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    variant: Variant = "official"
    preset: Optional[str] = None
    quick: bool = False
    quick_fixed: Tuple[str, ...] = ()  # dotted keys the user set, which --quick leaves as they are
    seed: int = 0
    device: str = "auto"
    out: str = "runs/dcwp"
    overwrite: bool = False
    resume: bool = False
    checkpoint_every: int = 500
    amp: bool = True  # bf16 autocast on CUDA
    cpu_amp: bool = False  # bf16 autocast on CPU (a CPU with native bf16 only; changes the numerics)
    channels_last: bool = True
    compile: bool = False
    progress: bool = True


#: What each variant decides where the config leaves a value unset (None); an explicit config value wins.
#: ``mask_upweight`` None means "lambda_up" (``finetune.upweight``). The one place these defaults live.
VARIANT_SETTINGS: Dict[str, Dict[str, Any]] = {
    # the official code: mask-learning upweight 80 whatever lambda_up is, its executed (asymmetric) contrastive
    # positives, sigmoid(logit) inside the Gumbel-sigmoid, the last fine-tuning iterate, no rewinding
    "official": {
        "mask_upweight": 80.0,
        "positives": "official",
        "gumbel": "official",
        "selected": "last",
        "rewind": "none",
        "rewind_point": 0.0,
        "lambda_con": LAMBDA_CON,
        "score_transform": "train",
    },
    # the official code's quirks fixed: lambda_up in mask learning, symmetric positives, the raw logit, best on valid
    "clean": {
        "mask_upweight": None,
        "positives": "symmetric",
        "gumbel": "clean",
        "selected": "best_valid",
        "rewind": "none",
        "rewind_point": 0.0,
        "lambda_con": LAMBDA_CON,
        "score_transform": "eval",
    },
    # DCWP+: official's training with a 4x stronger contrastive term in stages 3 and 4 (lambda_con 0.2); stage 4
    # run twice, on the trained f_D and on the subnetwork rewound to f_D's initialisation (lottery-ticket
    # rewinding; unstructured runs with a trained stage 1 only), and the arm whose best iterate is better on
    # valid kept, at that iterate. Each setting won on valid in the benchmark (docs/benchmarks.md, "DCWP+")
    "plus": {
        "mask_upweight": 80.0,
        "positives": "official",
        "gumbel": "official",
        "selected": "best_valid",
        "rewind": "auto",
        "rewind_point": 0.0,
        "lambda_con": 0.2,
        "score_transform": "train",
    },
}


def resolve_variant(config: RunConfig) -> Dict[str, Any]:
    """The settings of ``config.variant`` (:data:`VARIANT_SETTINGS`) under the config's own values, which win:
    ``mask.upweight``, ``mask.positives``, ``mask.gumbel``, ``mask.lambda_con``, ``finetune.lambda_con``,
    ``finetune.select``, ``finetune.rewind`` and ``finetune.rewind_point``. A variant's rewinding applies where
    it can: not to a structured run (its model is physically smaller) nor, for a stage-1 rewind, to a run whose
    f_D comes from ``model_file``."""
    v = VARIANT_SETTINGS[config.variant]
    rewind = config.finetune.rewind
    if rewind is None:
        rewind = v["rewind"]
        if config.prune.structured or (rewind in ("stage1", "auto") and config.model_file):
            rewind = "none"
    point = config.finetune.rewind_point
    return {
        "mask_lambda_con": v["lambda_con"] if config.mask.lambda_con is None else config.mask.lambda_con,
        "finetune_lambda_con": v["lambda_con"] if config.finetune.lambda_con is None else config.finetune.lambda_con,
        "mask_upweight": config.mask.upweight or v["mask_upweight"] or config.finetune.upweight,
        "positives": config.mask.positives or v["positives"],
        "gumbel": config.mask.gumbel or v["gumbel"],
        "selected": config.finetune.select or v["selected"],
        "rewind": rewind,
        "rewind_point": v["rewind_point"] if point is None else point,
        "score_transform": v["score_transform"],
    }


#: Numeric ranges: (dotted key, low, low included, high or None, high included). None values are unset.
_RANGES: Tuple[Tuple[str, float, bool, Optional[float], bool], ...] = tuple(
    [
        (k, 0.0, True, None, False)
        for k in (
            "seed",
            "checkpoint_every",
            "data.num_workers",
            "biased.iterations",
            "mask.iterations",
            "finetune.iterations",
            "biased.biased_iterations",
            "biased.weight_decay",
            "biased.biased_weight_decay",
            "biased.eta",
            "finetune.weight_decay",
            "mask.lambda_sparse",
            "mask.lambda_con",
            "finetune.lambda_con",
            "finetune.logit_correction",
        )
    ]
    + [
        (k, 0.0, False, None, False)
        for k in (
            "data.image_size",
            "data.batch_size",
            "data.eval_batch_size",
            "biased.lr",
            "biased.biased_lr",
            "biased.lr_decay_step",
            "biased.biased_lr_decay_step",
            "biased.lr_gamma",
            "biased.biased_lr_gamma",
            "mask.lr",
            "mask.temperature",
            "mask.gumbel_temperature",
            "mask.upweight",
            "mask.eval_every",
            "finetune.lr",
            "finetune.lr_decay_step",
            "finetune.lr_gamma",
            "finetune.temperature",
            "finetune.upweight",
            "finetune.eval_every",
            "prune.round_to",
        )
    ]
    + [
        ("data.valid_fraction", 0.0, False, 1.0, False),
        ("mining.tau", 0.0, False, 1.0, False),
        ("biased.q", 0.0, False, 1.0, True),
    ]
)
#: The CLI flag of a ranged key, named in its error.
_FLAG = {
    "seed": " (--seed)",
    "data.image_size": " (--image-size)",
    "data.batch_size": " (--batch-size)",
    "data.num_workers": " (--num-workers)",
    "data.root": " (--data-root)",
    "data.mnist_root": " (--mnist-root)",
    "stage1_from": " (--stage1-from)",
    "model_file": " (--model-file)",
}


def _dotted(config: Options, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def expand_paths(config: RunConfig) -> RunConfig:
    """``config`` with ``~`` expanded in every path it holds (out, model_file, stage1_from, a weights file,
    data.root, data.mnist_root), as a shell expands the CLI's flags."""

    def exp(path: Optional[str]) -> Optional[str]:
        return os.path.expanduser(path) if isinstance(path, str) and path.startswith("~") else path

    d = config.data
    return config.replace(
        out=exp(config.out),
        model_file=exp(config.model_file),
        stage1_from=exp(config.stage1_from),
        weights=exp(config.weights),
        data=d.replace(root=exp(d.root), mnist_root=exp(d.mnist_root)),
    )


def validate(config: RunConfig) -> None:
    """Raise ``ValueError`` naming the first bad option, its value and the accepted values.

    Types and choice lists are checked when a config is built; this checks ranges and combinations.
    """
    for key, path, want in (
        ("data.root", config.data.root, "folder"),
        ("data.mnist_root", config.data.mnist_root, "folder"),
        ("stage1_from", config.stage1_from, "folder"),
        ("model_file", config.model_file, "file"),
    ):
        if path is None:
            continue
        if want == "folder" and os.path.isfile(path):
            raise ConfigError(f"{key}{_FLAG.get(key, '')} {path!r} is a file; it takes a folder")
        if want == "file" and os.path.isdir(path):
            raise ConfigError(f"{key}{_FLAG.get(key, '')} {path!r} is a folder; it takes a state-dict file")
    if config.resume and config.overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
    if not (config.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", config.device)):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N (N a GPU index), got {config.device!r}")
    if not config.out.strip():
        raise ConfigError("out (--out) is empty; name the run folder (e.g. --out runs/mine)")
    if config.stage1_from is not None and os.path.realpath(config.stage1_from) == os.path.realpath(config.out):
        raise ConfigError(
            f"stage1_from (--stage1-from) {config.stage1_from!r} is this run's own folder; to continue "
            "it use --resume, to reuse its stage 1 in a new run give the new run another --out"
        )
    for key, low, low_ok, high, high_ok in _RANGES:
        value = _dotted(config, key)
        if value is None:
            continue
        if (value < low if low_ok else value <= low) or (
            high is not None and (value > high if high_ok else value >= high)
        ):
            lo, hi = "[" if low_ok else "(", "]" if high_ok else ")"
            want = f"in {lo}{low:g}, {high:g}{hi}" if high is not None else f"{'>=' if low_ok else '>'} {low:g}"
            raise InputError(f"{key} must be {want}, got {value:g}{_FLAG.get(key, '')}")
    p = config.prune
    given = [k for k in PRUNE_RULES if getattr(p, k) is not None]
    if len(given) > 1:
        raise InputError(f"pass at most one of {' / '.join(PRUNE_RULES)}, got {', '.join(given)}")
    for k in ("sparsity", "threshold"):
        v = getattr(p, k)
        if v is not None and not 0.0 <= v <= 1.0:
            raise InputError(f"prune.{k} must be in [0, 1], got {v}")
    if p.amount is not None and not 0.0 <= p.amount <= 1.0:
        raise InputError(f"prune.amount must be a fraction in [0, 1], got {p.amount}")
    if p.iterative_steps < 1:
        raise InputError(f"prune.iterative_steps must be >= 1, got {p.iterative_steps}")
    if not 0.0 < p.pruning_ratio < 1.0:
        raise InputError(f"prune.pruning_ratio must be in (0, 1), got {p.pruning_ratio}")
    if p.target_macs is not None and not p.target_macs > 1.0:
        raise InputError(f"prune.target_macs is a MACs reduction factor > 1 (2.0 = half the MACs), got {p.target_macs}")
    for key in ("target_macs", "normalizer", "round_to"):
        if getattr(p, key) is not None and not p.structured:
            raise InputError(f"prune.{key} applies to structured pruning; pass --structured (or unset {key})")
    defaults = PruneConfig()
    for key, flag in (
        ("pruning_ratio", "--pruning-ratio"),
        ("global_pruning", "--global-ranking"),
        ("iterative_steps", "--iterative-steps"),
    ):
        if not p.structured and getattr(p, key) != getattr(defaults, key):
            raise InputError(
                f"prune.{key} ({flag}) applies to structured pruning and this run is unstructured; pass "
                f"--structured, or drop {flag}"
            )
    if p.structured and given:
        raise InputError(
            f"prune.{given[0]} (--{given[0]}) sets unstructured pruning and this run is structured "
            "(--structured): choose channels with --pruning-ratio / --target-macs, or drop --structured"
        )
    if p.normalizer is not None and not p.global_pruning:
        raise InputError(
            f"prune.normalizer = {p.normalizer!r} applies to the global channel ranking; set "
            "prune.global_pruning = true (--global-ranking), or unset normalizer"
        )
    if p.shuffle and p.structured:
        raise InputError(
            "prune.shuffle (--shuffle-mask) re-draws unstructured masks at random and this run is "
            "structured (--structured): drop one of them"
        )
    f, variant = config.finetune, resolve_variant(config)
    if f.rewind_point is not None and not 0.0 <= f.rewind_point <= 1.0:
        raise InputError(f"finetune.rewind_point is a fraction of f_D's schedule in [0, 1], got {f.rewind_point:g}")
    if f.rewind not in (None, "none") and p.structured:
        raise InputError(
            f"finetune.rewind = {f.rewind!r} (--rewind) resets the weights of the dense architecture and "
            "this run is structured (--structured), whose model is physically smaller: drop one of them"
        )
    if f.rewind in ("stage1", "auto") and config.model_file:
        raise InputError(
            f"finetune.rewind = {f.rewind!r} (--rewind {f.rewind}) rewinds to f_D's stage-1 snapshots, and with "
            "model_file (--model-file) f_D is not trained here: use --rewind fresh, or drop --model-file"
        )
    if variant["rewind"] in ("stage1", "auto"):
        from ..training.biased import snapshot_key

        kept = [snapshot_key(x) for x in config.biased.snapshots]
        point = variant["rewind_point"]
        if snapshot_key(point) not in kept:
            raise InputError(
                f"finetune.rewind_point {point:g} (--rewind-point) is not one of the stage-1 "
                f"snapshots biased.snapshots = ({', '.join(kept) or 'none'}): add it there (before stage 1 "
                "runs) or pick one of them"
            )
    if config.data.ratio is not None and not 0.0 <= config.data.ratio <= 100.0:
        raise InputError(f"data.ratio is a percentage in [0, 100], got {config.data.ratio}")
