"""Stage 2: mine the bias-conflicting samples, keyed by sample id."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Literal, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .._atomic import write_json
from ..errors import InputError, UnknownNameError
from ..options import Options, choices, option
from .engine import Runtime
from .passes import per_sample

__all__ = [
    "IMPLAUSIBLE_MINED_FRACTION",
    "MINING_METHODS",
    "MinedSet",
    "MiningConfig",
    "MiningMethod",
    "mine_conflicting",
    "mined_fraction_bound",
    "mining_warnings",
]

#: ``wrong``: f_B misclassifies the sample; ``ensemble``: epoch-averaged ``1 - p_B(y|x) > tau``;
#: ``oracle``: the true conflict labels (ablations only).
MiningMethod = Literal["wrong", "ensemble", "oracle"]
MINING_METHODS = choices(MiningMethod)


@dataclass(frozen=True)
class MiningConfig(Options):
    """Stage 2: which samples count as bias-conflicting."""

    method: MiningMethod = option("wrong", flag="--mining", help="Bias-conflicting mining method.")
    tau: float = option(0.8, gt=0, lt=1)


@dataclass
class MinedSet:
    """Mined bias-conflicting flags keyed by sample id, with quality against the truth if known."""

    ids: List[str]
    flags: Tensor  # bool, aligned with ids
    method: str
    precision: Optional[float] = None
    recall: Optional[float] = None

    def __post_init__(self) -> None:
        self._index = {i: k for k, i in enumerate(self.ids)}

    @property
    def count(self) -> int:
        return int(self.flags.sum())

    def flags_for(self, ids: Sequence[str]) -> Tensor:
        """Flags of the given sample ids (KeyError naming an unknown id)."""
        try:
            return self.flags[[self._index[i] for i in ids]]
        except KeyError as err:
            raise UnknownNameError(
                f"sample id {err.args[0]!r} was not mined; mined ids come from another dataset?"
            ) from None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "method": self.method,
            "precision": self.precision,
            "recall": self.recall,
            "count": self.count,
            "conflicting_ids": [i for i, f in zip(self.ids, self.flags.tolist()) if f],
            "num_samples": len(self.ids),
        }

    def save(self, path: str, all_ids: bool = True) -> None:
        data = self.to_dict()
        if all_ids:
            data["ids"] = self.ids
        write_json(path, data, indent=None)

    @classmethod
    def load(cls, path: str) -> "MinedSet":
        """Read a file written by :meth:`save` (a damaged file raises ``ValueError`` naming it)."""
        try:
            with open(path) as f:
                data = json.load(f)
            ids, method, conflicting = list(data["ids"]), str(data["method"]), set(data["conflicting_ids"])
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(
                f"{path!r} is damaged ({type(err).__name__}: {err}); delete it so that the run mines "
                "again (dcwp-prune ... --resume)"
            ) from None
        flags = torch.tensor([i in conflicting for i in ids], dtype=torch.bool)
        return cls(ids, flags, method, data.get("precision"), data.get("recall"))


def _quality(flags: Tensor, truth: Optional[Tensor]) -> tuple[Optional[float], Optional[float]]:
    if truth is None:
        return None, None
    hits = int((flags & truth).sum())
    precision = hits / int(flags.sum()) if int(flags.sum()) else None
    recall = hits / int(truth.sum()) if int(truth.sum()) else None
    return precision, recall


def mine_conflicting(
    method: str,
    ids: Sequence[str],
    *,
    labels_loader: Optional[DataLoader] = None,
    model_b: Optional[nn.Module] = None,
    pseudo_scores: Optional[Tensor] = None,
    tau: float = 0.8,
    truth: Optional[Tensor] = None,
    runtime: Optional[Runtime] = None,
) -> MinedSet:
    """Flag bias-conflicting training samples.

    Args:
        method: ``wrong`` (f_B misclassifies the sample), ``ensemble`` (epoch-averaged
            ``1 - p_B(y|x) > tau``) or ``oracle`` (the true conflict labels; ablations only).
        ids: sample ids in dataset order.
        labels_loader: an evaluation loader over the training set (for ``wrong``).
        model_b: the biased model (for ``wrong``).
        pseudo_scores: per-sample scores from stage 1 (for ``ensemble``).
        truth: true conflict flags, for precision / recall (and required by ``oracle``).
    """
    runtime = runtime or Runtime()
    n = len(ids)
    if method == "wrong":
        if model_b is None or labels_loader is None:
            raise InputError("mining 'wrong' needs the biased model and a loader over the training set")
        flags = _misclassified(model_b, labels_loader, n, runtime)
    elif method == "ensemble":
        if pseudo_scores is None:
            raise InputError(
                "mining 'ensemble' needs the epoch-averaged scores of stage 1 (biased.loss='confident_ce')"
            )
        flags = pseudo_scores > tau
    elif method == "oracle":
        if truth is None:
            raise InputError("mining 'oracle' needs the true bias labels")
        flags = truth.clone()
    else:
        raise InputError(f"mining method must be one of {MINING_METHODS}, got {method!r}")
    flags = flags.bool().cpu()
    precision, recall = _quality(flags, None if truth is None else truth.bool().cpu())
    return MinedSet(list(ids), flags, method, precision, recall)


def _misclassified(model: nn.Module, loader: DataLoader, n: int, runtime: Runtime) -> Tensor:
    """argmax != y for every sample (sharded across ranks)."""
    return per_sample(model, loader, n, lambda logits, y: (logits.argmax(1) != y).double(), runtime) > 0.5


# ------------------------------------------------------------------------------ plausibility of a mined set
#: Above this mined fraction the biased model has not learned the bias (it diverged or trained too
#: little): the standard releases hold 0.5-5 % bias-conflicting samples, and mining more than half
#: of the data cannot single them out.
IMPLAUSIBLE_MINED_FRACTION = 0.5
#: With a known conflict ratio r (%), the bound is min(0.5, max(0.1, 5 r / 100)): a mined set more than
#: five times the true conflicting set (and above a tenth of the data) has a precision of at most 20 %.
MINED_OVER_RATIO, MINED_FLOOR = 5.0, 0.1


def mined_fraction_bound(conflict_ratio: Optional[float] = None) -> float:
    """The largest mined fraction of the training set that :func:`mining_warnings` accepts."""
    if conflict_ratio is None:
        return IMPLAUSIBLE_MINED_FRACTION
    return min(IMPLAUSIBLE_MINED_FRACTION, max(MINED_FLOOR, MINED_OVER_RATIO * conflict_ratio / 100))


def mining_warnings(count: int, num_samples: int, method: str, conflict_ratio: Optional[float] = None) -> List[str]:
    """A loud note when stage 2 mined an implausible fraction (the result is not a normal DCWP result).

    The bound is :func:`mined_fraction_bound` of the dataset's conflict ratio (%), when it has one
    (10 % of the data at 0.5-2 %, 25 % at 5 %), else half the data. ``oracle`` mining takes the true
    labels and is never flagged.
    """
    fraction = count / max(num_samples, 1)
    bound = mined_fraction_bound(conflict_ratio)
    if method == "oracle" or fraction <= bound:
        return []
    given = f", above {100 * bound:.0f} %" + (
        "" if conflict_ratio is None else f" for a {conflict_ratio:g} % conflict ratio"
    )
    return [
        f"stage 2 mined {count} of {num_samples} training samples ({100 * fraction:.0f} %{given}) as "
        "bias-conflicting: the biased model did not learn the bias (diverged or trained too little; see the "
        "'biased' losses in metrics.jsonl), so this is not a valid DCWP result. Lower [biased] lr or train f_B "
        "longer."
    ]
