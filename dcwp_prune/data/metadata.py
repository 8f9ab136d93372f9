"""Metadata-CSV datasets (CelebA / Waterbirds style): one row per image with path, label, bias, split."""

from __future__ import annotations

import csv
import os
from typing import Dict, Mapping, Optional, Union

from torch import Tensor

from .base import BiasDataset, DatasetError, register_dataset
from .folders import is_readable, load_rgb

__all__ = ["CSVDataset"]

_DEFAULT_SPLITS = {"train": "0", "valid": "1", "test": "2"}


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
        if not os.path.isfile(csv_path):
            raise DatasetError(f"metadata CSV {csv_path!r} does not exist")
        if not os.path.isdir(image_dir):
            raise DatasetError(f"image folder {image_dir!r} does not exist (the CSV's {path_col!r} column is relative to it)")
        wanted = str((split_values or _DEFAULT_SPLITS)[split])
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
            raise DatasetError(f"{csv_path}: no rows with {split_col} == {wanted!r} (split {split!r})")
        self.num_classes = num_classes or (max(self.labels + self.biases) + 1)
        self.info: Dict[str, object] = {"dataset": name, "csv": os.path.abspath(csv_path), "split": split,
                                        "label": label_col, "bias": bias_col}
        self.check_labels(f"{name} {split}")

    def load_image(self, index: int) -> Tensor:
        return load_rgb(self.paths[index])


@register_dataset("csv")
def _csv(root: Optional[str] = None, split: str = "train", csv: str = "metadata.csv", image_dir: str = ".",
         **options) -> BiasDataset:
    """Generic metadata CSV: ``root/csv`` with paths relative to ``root/image_dir``."""
    root = root or "."
    for key in ("path_col", "label_col", "bias_col"):
        if key not in options:
            raise DatasetError(f"the csv dataset needs {key}= (the column name)")
    return CSVDataset(os.path.join(root, csv), os.path.join(root, image_dir), split, **options)


@register_dataset("celeba")
def _celeba(root: Optional[str] = None, split: str = "train", **options) -> BiasDataset:
    """CelebA blond hair vs male (DCWP's split): ``root/celebA/metadata_blonde_subsampled.csv``."""
    root = root or "."
    base = os.path.join(root, "celebA")
    options.setdefault("path_col", "image_id")
    options.setdefault("label_col", "Blond_Hair")
    options.setdefault("bias_col", "Male")
    options.setdefault("num_classes", 2)
    ds = CSVDataset(os.path.join(base, options.pop("csv", "metadata_blonde_subsampled.csv")),
                    os.path.join(base, "celeba", "img_align_celeba"), split, name="celeba", **options)
    ds.conflict_rule = "equal"  # DCWP: blond males and non-blond females are the minority groups
    return ds


@register_dataset("waterbirds")
def _waterbirds(root: Optional[str] = None, split: str = "train", **options) -> BiasDataset:
    """Waterbirds (Sagawa et al.): ``root/metadata.csv`` with img_filename, y, place, split."""
    root = root or "."
    options.setdefault("path_col", "img_filename")
    options.setdefault("label_col", "y")
    options.setdefault("bias_col", "place")
    options.setdefault("num_classes", 2)
    return CSVDataset(os.path.join(root, options.pop("csv", "metadata.csv")), root, split, name="waterbirds", **options)
