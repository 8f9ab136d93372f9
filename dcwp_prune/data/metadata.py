"""Metadata-CSV datasets (CelebA / Waterbirds style): one row per image with path, label, bias, split."""

from __future__ import annotations

import csv
import functools
import io
import math
import os
import warnings
from typing import Dict, List, Mapping, Optional, Tuple, Union

from torch import Tensor

from .base import BiasDataset, DatasetError, carve_valid, register_dataset
from .folders import is_readable, load_rgb

__all__ = ["CSVDataset"]

_DEFAULT_SPLITS = {"train": "0", "valid": "1", "test": "2"}
#: CSVDataset's keywords a run may set through ``data.options`` (``--data-option KEY=VALUE``).
_COLUMNS = ("path_col", "label_col", "bias_col", "split_col", "split_values", "num_classes")


class _NoRows(DatasetError):
    """The CSV has no row for the split asked for."""


def _label(value: Optional[str], column: str, row: int, path: str) -> int:
    """An integer label: ``1``, ``1.0`` and CelebA's ``-1`` (read as 0); anything else names the cell."""
    text = (value or "").strip()
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or v != int(v):
        raise DatasetError(
            f"{path}: row {row}, column {column!r} holds {text!r}, not an integer label (0, 1, ...; "
            "CelebA's -1 reads as 0)"
        )
    v = int(v)
    return 0 if v == -1 else v  # CelebA stores attributes as -1 / 1


def _rows_note(rows: List[int]) -> str:
    shown = ", ".join(map(str, rows[:10]))
    return f"row{'s' if len(rows) > 1 else ''} {shown}{', ...' if len(rows) > 10 else ''} ({len(rows)} in all)"


@functools.lru_cache(maxsize=16)
def _read_table(
    csv_path: str,
    stamp: Tuple[int, int],
    path_col: str,
    label_col: str,
    bias_col: str,
    split_col: str,
    split_values: Tuple[Tuple[str, str], ...],
) -> Dict[str, List[Tuple[int, str, int, int]]]:
    """``{split: [(row, path, label, bias), ...]}`` of a metadata CSV, read once per file version.

    The text must be UTF-8 (a byte-order mark is fine). Rows with a missing cell or a split value that
    ``split_values`` does not name are dropped, and an image listed twice in one split is kept once,
    each with one warning naming the rows; an image in two splits, or a label that is not an integer,
    is an error naming the file, the row and the column.
    """
    with open(csv_path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DatasetError(
            f"{csv_path}: line {line} is not UTF-8 text (byte 0x{raw[err.start]:02x}); save the file as "
            "UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE > NEW)"
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    needed = (path_col, label_col, bias_col, split_col)
    missing = [c for c in needed if c not in (reader.fieldnames or [])]
    if missing:
        raise DatasetError(f"{csv_path}: missing column(s) {missing}; columns are {reader.fieldnames}")
    split_of = {v: k for k, v in split_values}
    short: List[int] = []
    unknown: Dict[str, List[int]] = {}
    out: Dict[str, List[Tuple[int, str, int, int]]] = {k: [] for k, _ in split_values}
    seen: Dict[str, Tuple[str, int]] = {}
    duplicated: List[int] = []
    for i, r in enumerate(reader):
        row = i + 2  # the header is row 1
        if any(r.get(c) is None or not str(r[c]).strip() for c in needed):
            short.append(row)
            continue
        value = str(r[split_col]).strip()
        if value not in split_of:
            unknown.setdefault(value, []).append(row)
            continue
        split, path = split_of[value], str(r[path_col]).strip()
        if path in seen:
            other_split, other_row = seen[path]
            if other_split != split:
                raise DatasetError(
                    f"{csv_path}: image {path!r} is in split {other_split!r} (row {other_row}) and in "
                    f"split {split!r} (row {row}, column {split_col!r}); an image may be in one split only"
                )
            duplicated.append(row)
            continue
        seen[path] = (split, row)
        out[split].append(
            (row, path, _label(r[label_col], label_col, row, csv_path), _label(r[bias_col], bias_col, row, csv_path))
        )
    if short:
        warnings.warn(
            f"{csv_path}: {_rows_note(short)} dropped: a cell of {list(needed)} is missing or empty",
            RuntimeWarning,
            stacklevel=4,
        )
    for value, rows in unknown.items():
        warnings.warn(
            f"{csv_path}: {_rows_note(rows)} dropped: column {split_col!r} holds {value!r}, which "
            f"split_values ({dict(split_values)}) does not name",
            RuntimeWarning,
            stacklevel=4,
        )
    if duplicated:
        warnings.warn(
            f"{csv_path}: {_rows_note(duplicated)} dropped: the image is listed again in the same split "
            f"(column {path_col!r})",
            RuntimeWarning,
            stacklevel=4,
        )
    return out


def _check_option_types(**given: object) -> None:
    """The CSV's options (``--data-option KEY=VALUE``) with the type each needs, named when wrong."""
    for key, value in given.items():
        if value is None and key in ("split_values", "num_classes"):
            continue
        if key == "num_classes":
            ok, want = isinstance(value, int) and not isinstance(value, bool) and value >= 1, "an integer >= 1"
        elif key == "split_values":
            ok = isinstance(value, Mapping) and all(
                isinstance(v, (str, int)) and not isinstance(v, bool) for v in value.values()
            )
            want = 'a table {split: value}, e.g. --data-option \'split_values={"train": 0, "test": 2}\''
        else:
            ok, want = isinstance(value, (str, int)) and not isinstance(value, bool), "a column name"
        if not ok:
            raise DatasetError(f"data option {key} must be {want}, got {value!r} ({type(value).__name__})")


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

    def __init__(
        self,
        csv_path: str,
        image_dir: str,
        split: str,
        *,
        path_col: str,
        label_col: str,
        bias_col: str,
        split_col: str = "split",
        split_values: Optional[Mapping[str, Union[str, int]]] = None,
        num_classes: Optional[int] = None,
        transform=None,
        skip_corrupt: bool = False,
        name: str = "csv",
    ) -> None:
        super().__init__(transform)
        _check_option_types(
            path_col=path_col,
            label_col=label_col,
            bias_col=bias_col,
            split_col=split_col,
            split_values=split_values,
            num_classes=num_classes,
        )
        path_col, label_col, bias_col, split_col = map(str, (path_col, label_col, bias_col, split_col))
        if not os.path.isfile(csv_path):
            raise DatasetError(f"metadata CSV {csv_path!r} does not exist")
        if not os.path.isdir(image_dir):
            raise DatasetError(
                f"image folder {image_dir!r} does not exist (the CSV's {path_col!r} column is relative to it)"
            )
        split_values = split_values or _DEFAULT_SPLITS
        if split not in split_values:
            raise _NoRows(f"{csv_path}: split_values names no {split!r} split (it has {sorted(split_values)})")
        wanted = str(split_values[split])
        st = os.stat(csv_path)
        table = _read_table(
            os.path.abspath(csv_path),
            (st.st_mtime_ns, st.st_size),
            path_col,
            label_col,
            bias_col,
            split_col,
            tuple(sorted((k, str(v).strip()) for k, v in split_values.items())),
        )
        rows = sorted(table[split], key=lambda r: r[1])
        self.paths = [os.path.join(image_dir, p) for _, p, _, _ in rows]
        self.ids = [p for _, p, _, _ in rows]
        self.labels = [y for _, _, y, _ in rows]
        self.biases = [b for _, _, _, b in rows]
        if skip_corrupt:
            keep = [k for k, p in enumerate(self.paths) if is_readable(p)]
            self.skipped = [self.paths[k] for k in range(len(self.paths)) if k not in set(keep)]
            for attr in ("paths", "ids", "labels", "biases"):
                setattr(self, attr, [getattr(self, attr)[k] for k in keep])
        if not self.ids:
            raise _NoRows(f"{csv_path}: no rows with {split_col} == {wanted!r} (split {split!r})")
        self.num_classes = num_classes or (max(self.labels + self.biases) + 1)
        self.info: Dict[str, object] = {
            "dataset": name,
            "csv": os.path.abspath(csv_path),
            "split": split,
            "label": label_col,
            "bias": bias_col,
            "skipped_corrupt": len(getattr(self, "skipped", [])),
        }
        self.check_labels(f"{name} {split}")

    def load_image(self, index: int) -> Tensor:
        return load_rgb(self.paths[index])


def load_csv_split(
    csv_path: str, image_dir: str, split: str, *, valid_fraction: float = 0.1, seed: int = 0, **options
) -> BiasDataset:
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
def _csv(
    root: Optional[str] = None, split: str = "train", csv: str = "metadata.csv", image_dir: str = ".", **options
) -> BiasDataset:
    """Generic metadata CSV: ``root/csv`` with paths relative to ``root/image_dir``."""
    root = root or "."
    for key, value in (("csv", csv), ("image_dir", image_dir)):
        if not isinstance(value, str):
            raise DatasetError(f"data option {key} must be a path (text), got {value!r} ({type(value).__name__})")
    for key in ("path_col", "label_col", "bias_col"):
        if key not in options:
            raise DatasetError(
                f"the csv dataset needs {key} (the column name): in a run, --data-option {key}=COLUMN "
                f'or [data.options] {key} = "COLUMN" in the --config file'
            )
    if not os.path.isfile(os.path.join(root, csv)):
        raise DatasetError(
            f"metadata CSV {os.path.join(root, csv)!r} does not exist (the csv dataset reads ROOT/{csv}; "
            "--data-option csv=FILE names another file under --data-root)"
        )
    return load_csv_split(os.path.join(root, csv), os.path.join(root, image_dir), split, **options)


@register_dataset("celeba", options=_RUN, extra_options=("csv",) + _COLUMNS, select_metric="worst_group")
def _celeba(root: Optional[str] = None, split: str = "train", **options) -> BiasDataset:
    """CelebA blond hair vs male (DCWP's split): ``root/celebA/metadata_blonde_subsampled.csv``."""
    root = root or "."
    base = os.path.join(root, "celebA")
    options.setdefault("path_col", "image_id")
    options.setdefault("label_col", "Blond_Hair")
    options.setdefault("bias_col", "Male")
    options.setdefault("num_classes", 2)
    ds = load_csv_split(
        os.path.join(base, options.pop("csv", "metadata_blonde_subsampled.csv")),
        os.path.join(base, "celeba", "img_align_celeba"),
        split,
        name="celeba",
        **options,
    )
    ds.conflict_rule = "equal"  # DCWP: blond males and non-blond females are the minority groups
    return ds


@register_dataset("waterbirds", options=_RUN, extra_options=("csv",) + _COLUMNS, select_metric="worst_group")
def _waterbirds(root: Optional[str] = None, split: str = "train", **options) -> BiasDataset:
    """Waterbirds (Sagawa et al.): ``root/metadata.csv`` with img_filename, y, place, split."""
    root = root or "."
    options.setdefault("path_col", "img_filename")
    options.setdefault("label_col", "y")
    options.setdefault("bias_col", "place")
    options.setdefault("num_classes", 2)
    return load_csv_split(
        os.path.join(root, options.pop("csv", "metadata.csv")), root, split, name="waterbirds", **options
    )
