"""Metadata-CSV datasets (CelebA / Waterbirds style): one row per image with path, label, bias, split."""

from __future__ import annotations

import csv
import os
from typing import Dict, Mapping, Optional, Union

from torch import Tensor

from .base import BiasDataset, DatasetError, carve_valid, register_dataset
from .folders import is_readable, load_rgb

__all__ = ["CSVDataset"]

_DEFAULT_SPLITS = {"train": "0", "valid": "1", "test": "2"}
#: CSVDataset's keywords a run may set through ``data.options`` (``--data-option KEY=VALUE``).
_COLUMNS = ("path_col", "label_col", "bias_col", "split_col", "split_values", "num_classes")


class _NoRows(DatasetError):
    """The CSV has no row for the split asked for."""


def _binary(value: str, column: str, row: int, path: str) -> int:
    try:
        v = int(float(value))
    except ValueError:
        raise DatasetError(f"{path}: row {row}: column {column!r} holds {value!r}, not an integer label") from None
    return 0 if v == -1 else v  # CelebA stores attributes as -1 / 1


class CSVDataset(BiasDataset):
    """Images listed in a CSV with configurable column names.

    Args:
        csv_path: the metadata CSV.
        image_dir: folder the path column is relative to.
        split: ``train`` / ``valid`` / ``test``.
        path_col, label_col, bias_col, split_col: column names.
        split_values: value of ``split_col`` for each split (default ``0/1/2``).
        num_classes: class count (default: 1 + the largest label seen).
    """

    def __init__(self, csv_path: str, image_dir: str, split: str, *, path_col: str, label_col: str, bias_col: str,
                 split_col: str = "split", split_values: Optional[Mapping[str, Union[str, int]]] = None,
                 num_classes: Optional[int] = None, transform=None, skip_corrupt: bool = False,
                 name: str = "csv") -> None:
        super().__init__(transform)
        path_col, label_col, bias_col, split_col = map(str, (path_col, label_col, bias_col, split_col))
        if not os.path.isfile(csv_path):
            raise DatasetError(f"metadata CSV {csv_path!r} does not exist")
        if not os.path.isdir(image_dir):
            raise DatasetError(f"image folder {image_dir!r} does not exist (the CSV's {path_col!r} column is relative to it)")
        split_values = split_values or _DEFAULT_SPLITS
        if split not in split_values:
            raise _NoRows(f"{csv_path}: split_values names no {split!r} split (it has {sorted(split_values)})")
        wanted = str(split_values[split])
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in (path_col, label_col, bias_col, split_col) if c not in (reader.fieldnames or [])]
            if missing:
                raise DatasetError(f"{csv_path}: missing column(s) {missing}; columns are {reader.fieldnames}")
            rows = [(i + 2, r) for i, r in enumerate(reader) if str(r[split_col]).strip() == wanted]
        rows.sort(key=lambda ir: ir[1][path_col])
        self.paths = [os.path.join(image_dir, r[path_col]) for _, r in rows]
        self.ids = [r[path_col] for _, r in rows]
        self.labels = [_binary(r[label_col], label_col, i, csv_path) for i, r in rows]
        self.biases = [_binary(r[bias_col], bias_col, i, csv_path) for i, r in rows]
        if skip_corrupt:
            keep = [k for k, p in enumerate(self.paths) if is_readable(p)]
            self.skipped = [self.paths[k] for k in range(len(self.paths)) if k not in set(keep)]
            for attr in ("paths", "ids", "labels", "biases"):
                setattr(self, attr, [getattr(self, attr)[k] for k in keep])
        if not self.ids:
            raise _NoRows(f"{csv_path}: no rows with {split_col} == {wanted!r} (split {split!r})")
        self.num_classes = num_classes or (max(self.labels + self.biases) + 1)
        self.info: Dict[str, object] = {"dataset": name, "csv": os.path.abspath(csv_path), "split": split,
                                        "label": label_col, "bias": bias_col}
        self.check_labels(f"{name} {split}")

    def load_image(self, index: int) -> Tensor:
        return load_rgb(self.paths[index])


def load_csv_split(csv_path: str, image_dir: str, split: str, *, valid_fraction: float = 0.1, seed: int = 0,
                   **options) -> BiasDataset:
    """One split of a metadata CSV; without valid rows, valid is a stratified (class x bias) share of train.

    As for the folder releases, validation never comes from the test rows: a CSV that has only train
    and test rows (or ``split_values`` without ``valid``) gets ``valid_fraction`` of its train rows,
    stratified by class x bias with ``seed``, and train keeps the rest.
    """
    if split == "test":
        return CSVDataset(csv_path, image_dir, split, **options)
    try:  # are there valid rows? (a probe: no image is opened)
        CSVDataset(csv_path, image_dir, "valid", **dict(options, skip_corrupt=False))
    except _NoRows:
        full = CSVDataset(csv_path, image_dir, "train", **options)
        ds = carve_valid(full, split, valid_fraction, seed)
        ds.check_labels(f"{full.info['dataset']} {split}")
        return ds
    ds = CSVDataset(csv_path, image_dir, split, **options)
    ds.info["valid"] = "the CSV's valid rows"
    return ds


#: The run options the metadata-CSV factories take (a carved validation split needs the fraction and seed).
_RUN = ("valid_fraction", "seed", "skip_corrupt")


@register_dataset("csv", options=_RUN, extra_options=("csv", "image_dir") + _COLUMNS)
def _csv(root: Optional[str] = None, split: str = "train", csv: str = "metadata.csv", image_dir: str = ".",
         **options) -> BiasDataset:
    """Generic metadata CSV: ``root/csv`` with paths relative to ``root/image_dir``."""
    root = root or "."
    for key in ("path_col", "label_col", "bias_col"):
        if key not in options:
            raise DatasetError(f"the csv dataset needs {key} (the column name): in a run, --data-option {key}=COLUMN "
                               f"or [data.options] {key} = \"COLUMN\" in the --config file")
    if not os.path.isfile(os.path.join(root, csv)):
        raise DatasetError(f"metadata CSV {os.path.join(root, csv)!r} does not exist (the csv dataset reads ROOT/{csv}; "
                           "--data-option csv=FILE names another file under --data-root)")
    return load_csv_split(os.path.join(root, csv), os.path.join(root, image_dir), split, **options)


@register_dataset("celeba", options=_RUN, extra_options=("csv",) + _COLUMNS)
def _celeba(root: Optional[str] = None, split: str = "train", **options) -> BiasDataset:
    """CelebA blond hair vs male (DCWP's split): ``root/celebA/metadata_blonde_subsampled.csv``."""
    root = root or "."
    base = os.path.join(root, "celebA")
    options.setdefault("path_col", "image_id")
    options.setdefault("label_col", "Blond_Hair")
    options.setdefault("bias_col", "Male")
    options.setdefault("num_classes", 2)
    ds = load_csv_split(os.path.join(base, options.pop("csv", "metadata_blonde_subsampled.csv")),
                        os.path.join(base, "celeba", "img_align_celeba"), split, name="celeba", **options)
    ds.conflict_rule = "equal"  # DCWP: blond males and non-blond females are the minority groups
    return ds


@register_dataset("waterbirds", options=_RUN, extra_options=("csv",) + _COLUMNS)
def _waterbirds(root: Optional[str] = None, split: str = "train", **options) -> BiasDataset:
    """Waterbirds (Sagawa et al.): ``root/metadata.csv`` with img_filename, y, place, split."""
    root = root or "."
    options.setdefault("path_col", "img_filename")
    options.setdefault("label_col", "y")
    options.setdefault("bias_col", "place")
    options.setdefault("num_classes", 2)
    return load_csv_split(os.path.join(root, options.pop("csv", "metadata.csv")), root, split, name="waterbirds",
                          **options)
