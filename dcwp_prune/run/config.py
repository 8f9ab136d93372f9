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
from ..options import ConfigError, Options, check_ranges, choices, flag_of, get_dotted, option, option_specs
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

    name: str = option("cmnist", flag="--data", help="Dataset name (see --list-datasets).")
    root: Optional[str] = option(
        None, flag="--data-root", path="folder", help="Folder holding the release (e.g. ROOT/bffhq/...)."
    )
    ratio: Optional[float] = option(
        None,
        flag="--ratio",
        ge=0,
        le=100,
        means="a percentage",
        help="Conflict ratio of the release in percent (0.5, 1, 2, 5).",
    )
    source: DigitSource = option(
        "auto", flag="--source", show_default=True, help="CMNIST digit source."
    )  # cmnist digits
    mnist_root: Optional[str] = option(
        None, flag="--mnist-root", path="folder", help="torchvision MNIST folder for --source mnist/auto."
    )
    image_size: Optional[int] = option(None, flag="--image-size", gt=0, help="Resize images to this size (any model).")
    batch_size: int = option(256, flag="--batch-size", gt=0, help="Training batch size.")
    eval_batch_size: int = option(512, gt=0)
    num_workers: int = option(0, flag="--num-workers", ge=0, help="DataLoader worker processes.")
    valid_fraction: float = option(0.1, gt=0, lt=1)
    test_protocol: TestProtocol = option(  # bffhq: full (DCWP) | conflicting (DisEnt)
        "full", flag="--test-protocol", help="BFFHQ test set: full (DCWP) or conflicting."
    )
    skip_corrupt: bool = option(  # drop unreadable images (counted) instead of failing
        False, flag="--skip-corrupt", help="Skip unreadable images (counted in the report) instead of failing."
    )
    options: Dict[str, Any] = field(default_factory=dict)  # the dataset's own options (csv: path_col, ...)


@dataclass(frozen=True)
class PruneConfig(Options):
    """How the learned scores become a subnetwork.

    Unstructured (default): DCWP's rule ``logit >= 0``, or one of ``amount`` / ``sparsity`` /
    ``threshold`` through ``DCWPMethod``. Structured: ``pruning_ratio`` of channels through
    Torch-Pruning with ``DCWPImportance``, or with ``target_macs`` the smallest ratio up to
    ``pruning_ratio`` that divides the MACs by ``target_macs`` (``prune_channels(target_macs_ratio=)``).
    """

    structured: bool = option(
        False, flag="--structured", help="Remove channels (Torch-Pruning) instead of zeroing weights."
    )
    amount: Optional[float] = option(
        None, flag="--amount", ge=0, le=1, help="Unstructured: prune this fraction of the lowest-scored weights."
    )
    sparsity: Optional[float] = option(None, flag="--sparsity", ge=0, le=1, help="Unstructured: target total sparsity.")
    threshold: Optional[float] = option(
        None, flag="--threshold", ge=0, le=1, help="Unstructured: prune keep-probabilities below this (DCWP's: 0.5)."
    )
    pruning_ratio: float = option(
        0.5,
        flag="--pruning-ratio",
        show_default=True,
        gt=0,
        lt=1,
        help="Channel ratio for --structured (with --target-macs: the largest ratio tried).",
    )
    round_to: Optional[int] = option(None, gt=0)
    global_pruning: bool = option(  # structured: one channel ranking across layers (True) or per layer
        False,
        flag="--global-ranking/--local-ranking",
        help="--structured: rank channels across layers, or within each layer (every layer loses the same share).",
    )
    iterative_steps: int = option(  # structured: reach pruning_ratio in this many steps
        1,
        flag="--iterative-steps",
        show_default=True,
        ge=1,
        help="--structured: reach the ratio in this many steps (scores follow the removed channels).",
    )
    target_macs: Optional[float] = option(  # structured: the smallest ratio <= pruning_ratio with this MACs reduction
        None,
        flag="--target-macs",
        gt=1,
        means="a MACs reduction factor: 2.0 = half the MACs",
        help="--structured: prune the smallest ratio that divides the MACs by this (2 = half the MACs); the ratio "
        "found is recorded with the result.",
    )
    normalizer: Optional[Normalizer] = None  # structured: per-layer normalisation before a global ranking
    shuffle: bool = option(  # control: each tensor's kept weights re-drawn at random (its sparsity kept)
        False,
        flag="--shuffle-mask",
        help="Control: re-draw each tensor's kept weights at random (its sparsity kept), to measure what the "
        "learned mask adds over chance.",
    )

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
    weights: Optional[str] = option(
        None, flag="--weights", help="torchvision weights name (DEFAULT, IMAGENET1K_V1) or a state-dict file."
    )
    model_file: Optional[str] = option(  # a trained f_D (state dict): skip its training
        None, flag="--model-file", path="file", help="A trained f_D (state dict): skip its training."
    )
    stage1_from: Optional[str] = option(  # a run folder whose finished stage 1 (f_D, f_B) this run starts from
        None,
        flag="--stage1-from",
        path="folder",
        help="Start from the finished stage 1 (f_D, f_B) of another run folder with the same model, data, seed "
        "and [biased] options (variants and ablations share it).",
    )
    data: DataConfig = field(default_factory=DataConfig)
    biased: BiasedTrainConfig = field(default_factory=BiasedTrainConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    mask: MaskLearnConfig = field(default_factory=MaskLearnConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    variant: Variant = option(
        "official",
        flag="--variant",
        show_default=True,
        help="official (the default: the faithful reproduction of the paper's code, what published DCWP numbers "
        "compare with), clean (its quirks fixed) or plus (recommended for accuracy: above official at every "
        "measured ratio on both benchmark backbones; docs/benchmarks.md).",
    )
    preset: Optional[str] = option(
        None, flag="--preset", help="Hyperparameter preset (default: the dataset's): cmnist, cifar10c, bffhq, celeba."
    )
    quick: bool = option(False, flag="--quick", help="Scaled-down schedule for demos (labelled as such everywhere).")
    quick_fixed: Tuple[str, ...] = ()  # dotted keys the user set, which --quick leaves as they are
    seed: int = option(0, flag="--seed", ge=0, show_default=True, help="Seed of everything the run draws.")
    device: str = option("auto", flag="--device", show_default=True, help="auto, cpu, cuda or cuda:N.")
    out: str = option(
        "runs/dcwp", flag="--out", path="folder", help="Run folder (default runs/MODEL-DATA-RATIO-seedN)."
    )
    overwrite: bool = option(
        False,
        flag="--overwrite",
        help="Replace an existing run folder (the old run is deleted only once the new one has a checkpoint).",
    )
    resume: bool = option(False, flag="--resume", help="Continue the interrupted run in --out with its saved options.")
    checkpoint_every: int = option(500, ge=0)
    amp: bool = True  # bf16 autocast on CUDA
    cpu_amp: bool = option(  # bf16 autocast on CPU (a CPU with native bf16 only; changes the numerics)
        False,
        flag="--cpu-amp",
        help="bf16 autocast on the CPU: faster steps on a CPU with native bf16 (AVX512-BF16, AMX; refused on "
        "others); other numerics than fp32, so not bit-comparable with fp32 runs.",
    )
    channels_last: bool = True
    compile: bool = False
    progress: bool = option(True, flag="--progress/--no-progress", help="Progress bars.")


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
        "fb_length": 1.0,
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
        "fb_length": 1.0,
    },
    # DCWP+: official's training with a 4x stronger contrastive term in stages 3 and 4 (lambda_con 0.2); stage 4
    # run twice, on the trained f_D and on the subnetwork rewound to f_D's initialisation (lottery-ticket
    # rewinding; runs with a trained stage 1; a structured run rewinds its kept channels), and the arm whose best
    # iterate is better on valid kept, at that iterate; f_B trained twice its schedule's iterations
    # (``biased.biased_length``: mining at tiny conflict ratios). Each setting won on valid in the benchmark
    # (docs/benchmarks.md, "DCWP+")
    "plus": {
        "mask_upweight": 80.0,
        "positives": "official",
        "gumbel": "official",
        "selected": "best_valid",
        "rewind": "auto",
        "rewind_point": 0.0,
        "lambda_con": 0.2,
        "score_transform": "train",
        "fb_length": 2.0,
    },
}


def resolve_variant(config: RunConfig) -> Dict[str, Any]:
    """The settings of ``config.variant`` (:data:`VARIANT_SETTINGS`) under the config's own values, which win:
    ``mask.upweight``, ``mask.positives``, ``mask.gumbel``, ``mask.lambda_con``, ``finetune.lambda_con``,
    ``finetune.select``, ``finetune.rewind``, ``finetune.rewind_point`` and ``biased.biased_length``
    (``fb_length``). A variant's stage-1 rewinding applies where it can: not to a run whose f_D comes from
    ``model_file`` (a structured run rewinds its kept channels)."""
    v = VARIANT_SETTINGS[config.variant]
    rewind = config.finetune.rewind
    if rewind is None:
        rewind = v["rewind"]
        if rewind in ("stage1", "auto") and config.model_file:
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
        "fb_length": v["fb_length"] if config.biased.biased_length is None else config.biased.biased_length,
    }


#: The config's path options (``option(path=...)``): ``{dotted key: "file" | "folder" | "any"}``.
PATHS: Dict[str, str] = {spec.key: spec.path for spec in option_specs(RunConfig) if spec.path}


def expand_paths(config: RunConfig) -> RunConfig:
    """``config`` with ``~`` expanded in every path it holds (:data:`PATHS`, and a weights file), as a shell
    expands the CLI's flags."""

    def exp(path: Optional[str]) -> Optional[str]:
        return os.path.expanduser(path) if isinstance(path, str) and path.startswith("~") else path

    changes: Dict[str, Dict[str, Any]] = {}
    for key in (*PATHS, "weights"):
        section, _, name = key.rpartition(".")
        changes.setdefault(section, {})[name] = exp(get_dotted(config, key))
    top = changes.pop("", {})
    return config.replace(**top, **{k: getattr(config, k).replace(**v) for k, v in changes.items()})


def validate(config: RunConfig) -> None:
    """Raise ``ValueError`` naming the first bad option, its value and the accepted values.

    Types and choice lists are checked when a config is built; this checks ranges and combinations.
    """
    for key, want in PATHS.items():
        path = get_dotted(config, key)
        if path is None:
            continue
        if want == "folder" and os.path.isfile(path):
            raise ConfigError(f"{key}{flag_of(RunConfig, key)} {path!r} is a file; it takes a folder")
        if want == "file" and os.path.isdir(path):
            raise ConfigError(f"{key}{flag_of(RunConfig, key)} {path!r} is a folder; it takes a state-dict file")
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
    check_ranges(config)  # every option(ge= / gt= / le= / lt=) of the config and its stages
    p = config.prune
    given = [k for k in PRUNE_RULES if getattr(p, k) is not None]
    if len(given) > 1:
        raise InputError(f"pass at most one of {' / '.join(PRUNE_RULES)}, got {', '.join(given)}")
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
