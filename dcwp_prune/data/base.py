"""The sample contract shared by every dataset, the dataset registry, and split helpers.

Every dataset yields ``BiasSample(image, label, bias, id)``: a float CHW image tensor in [0, 1]
(before normalisation), the class label, the bias label, and a stable string id (a relative
path, or a generator index). Per-sample results (mined bias-conflicting flags) are keyed by id,
never by position.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._registry import Registry
from ..errors import InputError

__all__ = [
    "BiasDataset",
    "BiasSample",
    "DatasetError",
    "DatasetSpec",
    "carve_valid",
    "create_dataset",
    "dataset_spec",
    "list_datasets",
    "register_dataset",
    "stratified_split",
]

SPLITS = ("train", "valid", "test")


class DatasetError(InputError):
    """Bad dataset input: missing folders, unparsable names, labels out of range, ..."""


class BiasSample(NamedTuple):
    """One sample: ``image`` (float CHW tensor), ``label``, ``bias`` label, stable string ``id``."""

    image: Tensor
    label: int
    bias: int
    id: str


class BiasDataset(Dataset, abc.ABC):
    """Base class: subclasses fill ``ids``, ``labels``, ``biases`` and implement ``load_image``.

    Attributes:
        num_classes: number of target classes (the bias takes values in the same range).
        info: provenance for reports (dataset name, source, ratio, split, protocol).
        transform: applied to the float CHW image tensor.
    """

    num_classes: int = 0
    #: which samples are bias-conflicting: "differ" (label != bias) or "equal" (CelebA blond/male,
    #: where the diagonal groups are the minority ones)
    conflict_rule: str = "differ"

    def __init__(self, transform: Optional[Callable[[Tensor], Tensor]] = None) -> None:
        self.transform = transform
        self.ids: List[str] = []
        self.labels: List[int] = []
        self.biases: List[int] = []
        self.info: Dict[str, Any] = {}

    @abc.abstractmethod
    def load_image(self, index: int) -> Tensor:
        """The float CHW image tensor in [0, 1] at ``index``, before ``transform``."""

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> BiasSample:
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return BiasSample(image, self.labels[index], self.biases[index], self.ids[index])

    # ---------------------------------------------------------------------------------- views
    @property
    def label_tensor(self) -> Tensor:
        return torch.as_tensor(self.labels, dtype=torch.long)

    @property
    def bias_tensor(self) -> Tensor:
        return torch.as_tensor(self.biases, dtype=torch.long)

    @property
    def conflicting(self) -> Tensor:
        """Ground-truth bias-conflicting flags (``label != bias``, or ``==`` under ``conflict_rule="equal"``)."""
        if self.conflict_rule == "equal":
            return self.label_tensor == self.bias_tensor
        return self.label_tensor != self.bias_tensor

    def group_counts(self) -> Tensor:
        """C x C counts of (class, bias) groups."""
        c = self.num_classes
        counts = torch.zeros(c * c, dtype=torch.long)
        counts.index_add_(0, self.label_tensor * c + self.bias_tensor, torch.ones(len(self), dtype=torch.long))
        return counts.view(c, c)

    def subset(self, indices: Sequence[int]) -> "BiasDataset":
        """A view of the given positions (same images and transform)."""
        return _Subset(self, indices)

    def check_labels(self, where: str) -> None:
        """Labels within range and no empty class (raises :class:`DatasetError`)."""
        c = self.num_classes
        for i, (y, b) in enumerate(zip(self.labels, self.biases)):
            if not (0 <= y < c and 0 <= b < c):
                raise DatasetError(
                    f"{where}: sample {self.ids[i]!r} has label {y} / bias {b}, outside 0..{c - 1} "
                    f"for {c} classes; is this the right dataset?"
                )
        present = set(self.labels)
        empty = [k for k in range(c) if k not in present]
        if empty:
            raise DatasetError(f"{where}: class(es) {empty} have no samples; the split is incomplete")


class _Subset(BiasDataset):
    def __init__(self, parent: BiasDataset, indices: Sequence[int]) -> None:
        super().__init__(parent.transform)
        self.parent = parent
        self.index = list(indices)
        self.num_classes = parent.num_classes
        self.conflict_rule = parent.conflict_rule
        self.ids = [parent.ids[i] for i in self.index]
        self.labels = [parent.labels[i] for i in self.index]
        self.biases = [parent.biases[i] for i in self.index]
        self.info = dict(parent.info)

    def load_image(self, index: int) -> Tensor:
        return self.parent.load_image(self.index[index])


def stratified_split(keys: Sequence[int], fraction: float, seed: int) -> tuple[List[int], List[int]]:
    """Split positions so that each key (e.g. class * C + bias) keeps ``fraction`` in the second part.

    Every key with at least two members keeps at least one in each part. Deterministic in ``seed``.
    """
    rng = np.random.default_rng(seed)
    keys_arr = np.asarray(keys)
    first: List[int] = []
    second: List[int] = []
    for key in np.unique(keys_arr):
        members = np.flatnonzero(keys_arr == key)
        members = members[rng.permutation(len(members))]
        n = int(round(fraction * len(members)))
        if len(members) >= 2:
            n = min(max(n, 1), len(members) - 1)
        second.extend(members[:n].tolist())
        first.extend(members[n:].tolist())
    return sorted(first), sorted(second)


def carve_valid(full: "BiasDataset", split: str, valid_fraction: float, seed: int) -> "BiasDataset":
    """``split`` (train or valid) of a training set that has no validation split of its own: valid is
    ``valid_fraction`` of it, stratified by class x bias with ``seed``, and train keeps the rest."""
    c = full.num_classes
    train_idx, valid_idx = stratified_split([y * c + b for y, b in zip(full.labels, full.biases)], valid_fraction, seed)
    ds = full.subset(train_idx if split == "train" else valid_idx)
    ds.info["valid"] = f"carved from train ({valid_fraction:.0%}, stratified by class x bias, seed {seed})"
    return ds


#: The run options a dataset factory may take (``DataConfig`` fields, plus the run's ``seed``).
RUN_OPTIONS = ("ratio", "valid_fraction", "seed", "source", "mnist_root", "test_protocol", "skip_corrupt")


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the rest of the package needs to know about one dataset, in one place.

    Attributes:
        name: the registry name.
        factory: ``factory(root=..., split=..., **options) -> BiasDataset``.
        options: which :data:`RUN_OPTIONS` the factory takes (the pipeline passes exactly these).
        ratios: the standard conflict ratios (%) of its releases; empty when it has no conflict ratio.
        default_ratio: the ratio used when none is given (the only one a release ships, if so).
        ratios_present: ``root -> ratios found there`` (a release folder); when exactly one is
            present it is the default.
        transform: ``transform(split, image_size)``; None: the ImageNet-style default.
        select_metric: the validation metric that picks a best iterate (default ``unbiased``, the mean
            group accuracy: defined on every dataset with bias labels, where the worst group of a
            many-group dataset such as Colored MNIST's 100 can be 0 at every evaluation).
        test_protocols: the test sets it offers (the first is the default).
        extra_options: the factory's own keywords that a run may set through ``data.options``
            (``--data-option KEY=VALUE``), e.g. the csv dataset's column names.
    """

    name: str
    factory: Callable[..., BiasDataset]
    options: Tuple[str, ...] = ("skip_corrupt",)
    ratios: Tuple[float, ...] = ()
    default_ratio: Optional[float] = None
    ratios_present: Optional[Callable[[str], List[float]]] = None
    transform: Optional[Callable[[str, Optional[int]], Any]] = None
    select_metric: str = "unbiased"
    test_protocols: Tuple[str, ...] = ("full",)
    extra_options: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        metrics = ("accuracy", "unbiased", "aligned", "conflicting", "conflicting_pooled", "worst_group")
        if self.select_metric not in metrics:
            raise InputError(
                f"dataset {self.name!r}: select_metric {self.select_metric!r} is not a metric; one of "
                f"{', '.join(metrics)}"
            )
        unknown = sorted(set(self.options) - set(RUN_OPTIONS))
        if unknown:
            raise InputError(f"dataset {self.name!r}: unknown option(s) {unknown}; valid: {RUN_OPTIONS}")
        clash = sorted(set(self.extra_options) & set(RUN_OPTIONS + ("root", "split", "transform")))
        if clash:
            raise InputError(f"dataset {self.name!r}: extra option(s) {clash} are set by the run itself")

    def check_extra_options(self, given: Dict[str, Any]) -> None:
        """Refuse ``data.options`` keys this dataset's factory does not take (the message lists those it does)."""
        unknown = sorted(set(given) - set(self.extra_options))
        if not unknown:
            return
        own = sorted(set(unknown) & set(RUN_OPTIONS))
        if own:
            raise DatasetError(
                f"data.options {own}: the run passes these itself (from its own options: --seed, "
                "--ratio, data.valid_fraction, ...); drop them from data.options"
            )
        takes = (
            f"it takes {', '.join(self.extra_options)}"
            if self.extra_options
            else "it takes none (only datasets such as csv have options of their own)"
        )
        raise DatasetError(f"dataset {self.name!r} has no option(s) {unknown} (data.options / --data-option); {takes}")

    def resolve_ratio(self, ratio: Optional[float], root: Optional[str] = None) -> Optional[float]:
        """``ratio`` if given; else the one ratio present under ``root``, else ``default_ratio``.

        A dataset without conflict ratios returns None (and refuses an explicit ratio).
        """
        if "ratio" not in self.options:
            if ratio is not None:
                raise DatasetError(f"dataset {self.name!r} has no conflict ratio; drop --ratio / data.ratio")
            return None
        if ratio is not None:
            return float(ratio)
        if root is not None and self.ratios_present is not None:
            present = self.ratios_present(root)
            if len(present) == 1:
                return present[0]
        return self.default_ratio

    def run_options(self, values: Dict[str, Any]) -> Dict[str, Any]:
        """The subset of ``values`` (keys from :data:`RUN_OPTIONS`) this dataset's factory takes."""
        return {k: values[k] for k in self.options if k in values}


_DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(name: str, **spec: Any) -> Callable[[Callable[..., BiasDataset]], Callable[..., BiasDataset]]:
    """Decorator registering a dataset factory ``fn(root=..., split=..., **options)``.

    ``spec`` holds the :class:`DatasetSpec` fields (``options``, ``ratios``, ``default_ratio``,
    ``transform``, ``select_metric``, ...); a dataset registered with none of them takes only
    ``skip_corrupt`` and is evaluated by worst-group accuracy.
    """

    def deco(factory: Callable[..., BiasDataset]) -> Callable[..., BiasDataset]:
        _DATASETS.register(name)(DatasetSpec(name, factory, **spec))
        return factory

    return deco


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of a registered dataset (``KeyError`` listing close matches)."""
    return _DATASETS.get(name)


def create_dataset(name: str, root: Optional[str] = None, split: str = "train", **options: Any) -> BiasDataset:
    """Build a registered dataset split.

    Args:
        name: one of :func:`list_datasets`.
        root: data root (holding e.g. ``cmnist/``); ``cmnist`` without a root is generated offline.
        split: ``train``, ``valid`` or ``test``.
        options: dataset-specific (``ratio``, ``transform``, ``source``, ...).

    Raises:
        KeyError: unknown dataset name (the message lists close matches).
        DatasetError: bad input; the message names the path or value and the fix.
    """
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    return _DATASETS.get(name).factory(root=root, split=split, **options)


def list_datasets() -> List[str]:
    """Registered dataset names."""
    return _DATASETS.names()
