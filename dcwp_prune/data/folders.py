"""Folder loaders for the standard releases in the DisEnt layout: ``cmnist``, ``cifar10c``, ``bffhq``.

Labels come from the file name: ``<id>_<class>_<bias>.<ext>`` (the id may itself contain ``_``).
File lists are sorted, ids are paths relative to the release folder, so anything computed per
sample is stable across runs and machines.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..options import choices
from .base import BiasDataset, DatasetError, carve_valid, register_dataset
from .cmnist import STANDARD_RATIOS, generate_cmnist, pct_name
from .transforms import cifar_transform, digits_transform, faces_transform

__all__ = [
    "IMAGE_EXTENSIONS",
    "TEST_PROTOCOLS",
    "FolderDataset",
    "TestProtocol",
    "is_readable",
    "load_rgb",
    "parse_label_name",
    "ratios_present",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

_TREES = {
    "cmnist": "{root}/cmnist/{pct}/align/<class>/<id>_<class>_<bias>.png\n"
    "{root}/cmnist/{pct}/conflict/<class>/<id>_<class>_<bias>.png\n"
    "{root}/cmnist/{pct}/valid/<class>/...   (optional)\n"
    "{root}/cmnist/test/<class>/<id>_<class>_<bias>.png",
    "cifar10c": "{root}/cifar10c/{pct}/align/<class>/<id>_<class>_<bias>.png\n"
    "{root}/cifar10c/{pct}/conflict/<class>/<id>_<class>_<bias>.png\n"
    "{root}/cifar10c/{pct}/valid/<class>/...   (optional)\n"
    "{root}/cifar10c/test/<class>/<id>_<class>_<bias>.png",
    "bffhq": "{root}/bffhq/{pct}/align/<class>/<id>_<class>_<bias>.png\n"
    "{root}/bffhq/{pct}/conflict/<class>/<id>_<class>_<bias>.png\n"
    "{root}/bffhq/valid/<id>_<class>_<bias>.png   (optional)\n"
    "{root}/bffhq/test/<id>_<class>_<bias>.png",
}
_NUM_CLASSES = {"cmnist": 10, "cifar10c": 10, "bffhq": 2}
#: ``full``: the whole test folder (DCWP); ``conflicting``: its bias-conflicting part (DisEnt).
TestProtocol = Literal["full", "conflicting"]
TEST_PROTOCOLS = choices(TestProtocol)


def parse_label_name(filename: str) -> Tuple[int, int]:
    """``(class, bias)`` from ``<id>_<class>_<bias>.<ext>``.

    Raises:
        DatasetError: the name does not end in two integer tokens.

    Example:
        >>> parse_label_name("img_12_a_3_1.png")
        (3, 1)
    """
    stem = os.path.splitext(os.path.basename(filename))[0]
    tokens = stem.split("_")
    if len(tokens) < 3:
        raise DatasetError(f"cannot parse labels from {filename!r}: expected <id>_<class>_<bias>.<ext>")
    try:
        y, b = int(tokens[-2]), int(tokens[-1])
    except ValueError:
        raise DatasetError(f"cannot parse labels from {filename!r}: the last two '_' tokens must be integers") from None
    if y < 0 or b < 0:
        raise DatasetError(f"cannot parse labels from {filename!r}: labels must be non-negative")
    return y, b


def _images_under(folder: str) -> List[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(
            os.path.join(dirpath, f)
            for f in filenames
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
        )
    return sorted(found)


#: PIL modes of one channel with more than 8 bits (16-bit PNG, 32-bit integer TIFF), and their full scale.
_WIDE_GRAY = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0}


def _to_rgb_tensor(img: Any) -> Tensor:
    """A PIL image as float RGB CHW in [0, 1], keeping the full range of 16-bit images (PIL's own
    ``convert("RGB")`` clips them to 0-255: a 16-bit PNG would turn black and white)."""
    import numpy as np
    from torchvision.transforms.functional import pil_to_tensor

    if img.mode in _WIDE_GRAY:
        arr = np.asarray(img, dtype=np.float32)
        scale = _WIDE_GRAY[img.mode] if arr.size == 0 or arr.max() <= 65535 else float(arr.max())
        gray = torch.from_numpy(np.clip(arr / scale, 0.0, 1.0))
        return gray.unsqueeze(0).expand(3, -1, -1).contiguous()
    if img.mode == "F":  # 32-bit float images: taken as [0, 1]
        gray = torch.from_numpy(np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0))
        return gray.unsqueeze(0).expand(3, -1, -1).contiguous()
    return pil_to_tensor(img.convert("RGB")).float().div_(255.0)


def load_rgb(path: str) -> Tensor:
    """An image file as a float RGB CHW tensor in [0, 1] (``DatasetError`` naming an unreadable file).

    8-bit images of any mode (palette, grey, RGBA, CMYK) go through PIL's RGB conversion; 16-bit grey
    images keep their range. An image above PIL's pixel limit (``Image.MAX_IMAGE_PIXELS``) is refused
    by name, as an unreadable one, so ``--skip-corrupt`` skips it.
    """
    from PIL import Image, UnidentifiedImageError

    fix = "or skip such files (--skip-corrupt, data.skip_corrupt = true, skip_corrupt=True)"
    try:
        with Image.open(path) as img:
            return _to_rgb_tensor(img)
    except Image.DecompressionBombError as err:
        raise DatasetError(
            f"image {path!r} is larger than the image library allows ({err}); resize it, raise "
            f"PIL.Image.MAX_IMAGE_PIXELS in your own script if you trust the file, {fix}"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"corrupt or unreadable image {path!r} ({err}); fix or delete it, {fix}") from None


def image_size(path: str) -> Tuple[int, int]:
    """``(width, height)`` of an image file from its header (the pixels are not decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.size
    except Image.DecompressionBombError as err:
        raise DatasetError(f"image {path!r} is larger than the image library allows ({err})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(
            f"corrupt or unreadable image {path!r} ({err}); fix or delete it, or skip such files (--skip-corrupt)"
        ) from None


def image_files(dataset: BiasDataset) -> Optional[List[str]]:
    """The image file of every sample of ``dataset`` (a subset's through its parent), or None for data
    held in memory."""
    paths = getattr(dataset, "paths", None)
    if paths is not None:
        return list(paths)
    parent = getattr(dataset, "parent", None)
    if parent is not None:
        files = image_files(parent)
        return None if files is None else [files[i] for i in dataset.index]  # type: ignore[attr-defined]
    return None


def check_same_size(splits: Dict[str, BiasDataset]) -> None:
    """Refuse images of different sizes (read from the headers) that no transform resizes: a batch of
    them cannot be stacked, and the run would fail only later. Names one file of each size."""
    first: Dict[Tuple[int, int], str] = {}
    for name, ds in splits.items():
        files = image_files(ds)
        for path in files or ():
            size = image_size(path)
            if size not in first:
                first[size] = path
                if len(first) > 1:
                    listed = "; ".join(f"{w}x{h}: {p}" for (w, h), p in first.items())
                    raise DatasetError(
                        f"the images are not all the same size and the {name} transform does not resize them "
                        f"({listed}); "
                        "pass --image-size N (data.image_size) to resize every image, or make the files one size"
                    )


def is_readable(path: str) -> bool:
    try:
        load_rgb(path)
        return True
    except DatasetError:
        return False


class FolderDataset(BiasDataset):
    """Images listed from folders; labels parsed from file names; ids relative to ``base``."""

    def __init__(
        self,
        files: Sequence[str],
        base: str,
        num_classes: int,
        info: Dict[str, object],
        transform: Optional[Callable[[Tensor], Tensor]] = None,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__(transform)
        self.num_classes = num_classes
        files = list(files)
        self.skipped: List[str] = []
        if skip_corrupt:
            self.skipped = [f for f in files if not is_readable(f)]
            files = [f for f in files if f not in set(self.skipped)]
        self.paths = files
        self.ids = [os.path.relpath(f, base).replace(os.sep, "/") for f in files]
        parsed = [parse_label_name(f) for f in files]
        self.labels = [y for y, _ in parsed]
        self.biases = [b for _, b in parsed]
        self.info = dict(info, skipped_corrupt=len(self.skipped))

    def load_image(self, index: int) -> Tensor:
        return load_rgb(self.paths[index])


def _release_dir(name: str, root: str, ratio: float = 1.0) -> str:
    if root and os.path.isfile(root):
        raise DatasetError(
            f"data root {root!r} is a file, not a folder; pass the folder that holds {name}/ (--data-root)"
        )
    if not root or not os.path.isdir(root):
        raise DatasetError(
            f"data root {root!r} does not exist. Expected layout:\n"
            + _TREES[name].format(root=root, pct=pct_name(ratio))
        )
    inner = os.path.join(root, name)
    if os.path.isdir(inner):
        return inner
    if os.path.basename(os.path.normpath(root)) == name:
        return root
    raise DatasetError(
        f"no {name!r} folder under {root!r}. Expected layout:\n" + _TREES[name].format(root=root, pct="1pct")
    )


def _ratio_dir(name: str, release: str, ratio: float, root: str) -> str:
    folder = os.path.join(release, pct_name(ratio))
    if os.path.isdir(folder):
        return folder
    found = sorted(d for d in os.listdir(release) if d.endswith("pct") and os.path.isdir(os.path.join(release, d)))
    raise DatasetError(
        f"{name} has no conflict ratio {ratio:g}% under {release!r} (looked for {pct_name(ratio)}/); "
        f"ratios found: {', '.join(found) or 'none'}. Expected layout:\n"
        + _TREES[name].format(root=root, pct=pct_name(ratio))
    )


def _must_have(folder: str, what: str, name: str, root: str) -> List[str]:
    if not os.path.isdir(folder):
        raise DatasetError(
            f"missing {what} folder {folder!r}. Expected layout:\n" + _TREES[name].format(root=root, pct="1pct")
        )
    files = _images_under(folder)
    if not files:
        raise DatasetError(f"{what} folder {folder!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def load_release(
    name: str,
    root: str,
    split: str,
    ratio: float = 1.0,
    transform=None,
    skip_corrupt: bool = False,
    valid_fraction: float = 0.1,
    seed: int = 0,
    test_protocol: str = "full",
    num_classes: Optional[int] = None,
) -> BiasDataset:
    """One split of a DisEnt-layout release (see ``_TREES`` for the expected folders).

    Args:
        ratio: conflict ratio in percent (folder ``{ratio:g}pct``).
        skip_corrupt: drop unreadable images (counted in ``info["skipped_corrupt"]``) instead of failing.
        valid_fraction, seed: the stratified (class x bias) validation split carved from train when
            the release has no valid folder.
        test_protocol: ``full`` (DCWP: the whole test folder) or ``conflicting`` (DisEnt).
        num_classes: override the release's class count (for subsets of a release).
    """
    release = _release_dir(name, root, ratio)
    ratio_dir = _ratio_dir(name, release, ratio, root) if split != "test" else None
    info: Dict[str, object] = {"dataset": name, "root": os.path.abspath(root), "ratio": float(ratio)}
    meta = os.path.join(ratio_dir or os.path.join(release, "test"), "generation.json")
    if os.path.isfile(meta):
        with open(meta) as f:
            info["source"] = json.load(f).get("source")
    kw = dict(num_classes=num_classes or _NUM_CLASSES[name], transform=transform, skip_corrupt=skip_corrupt)
    if split == "test":
        if test_protocol not in TEST_PROTOCOLS:
            raise DatasetError(f"test_protocol must be 'full' (DCWP) or 'conflicting' (DisEnt), got {test_protocol!r}")
        files = _must_have(os.path.join(release, "test"), "test", name, root)
        ds: BiasDataset = FolderDataset(
            files, release, info=dict(info, split="test", test_protocol=test_protocol), **kw
        )
        if test_protocol == "conflicting":
            ds = ds.subset([i for i, (y, b) in enumerate(zip(ds.labels, ds.biases)) if y != b])
        ds.check_labels(f"{name} test")
        return ds
    assert ratio_dir is not None
    train_files = _must_have(os.path.join(ratio_dir, "align"), "train (align)", name, root)
    conflict_dir = os.path.join(ratio_dir, "conflict")
    conflicting = _images_under(conflict_dir) if os.path.isdir(conflict_dir) else []
    if not conflicting and split == "train":
        what = "is empty" if os.path.isdir(conflict_dir) else "does not exist"
        warnings.warn(
            f"{conflict_dir!r} {what}: this training set holds no bias-conflicting image (a {ratio:g} % "
            "release should), so there is nothing for DCWP to find and upweight; check the release",
            RuntimeWarning,
            stacklevel=2,
        )
    train_files += conflicting
    valid_dir = next(
        (d for d in (os.path.join(ratio_dir, "valid"), os.path.join(release, "valid")) if os.path.isdir(d)), None
    )
    if valid_dir is not None:
        files = train_files if split == "train" else _must_have(valid_dir, "valid", name, root)
        ds = FolderDataset(
            files,
            ratio_dir if split == "train" or valid_dir.startswith(ratio_dir) else release,
            info=dict(info, split=split, valid="release"),
            **kw,
        )
    else:
        ds = carve_valid(
            FolderDataset(train_files, ratio_dir, info=dict(info, split=split), **kw), split, valid_fraction, seed
        )
    ds.check_labels(f"{name} {split}")
    return ds


def _factory(name: str, default_ratio: float = 1.0):
    """A dataset factory for one release; ``default_ratio``: the conflict ratio every release of it ships."""

    def create(
        root: Optional[str] = None, split: str = "train", ratio: Optional[float] = None, **options
    ) -> BiasDataset:
        ratio = default_ratio if ratio is None else ratio
        if root is None:
            raise DatasetError(
                f"{name} needs a data root (--data-root). Expected layout:\n"
                + _TREES[name].format(root="ROOT", pct=pct_name(ratio))
            )
        return load_release(name, root, split, ratio, **options)

    create.__doc__ = f"The {name} release (DisEnt layout):\n" + _TREES[name]
    return create


def ratios_present(name: str, root: str) -> List[float]:
    """The conflict ratios (%) whose ``{ratio}pct`` folders exist under the ``name`` release in ``root``."""
    for release in (os.path.join(root, name), root):
        if os.path.basename(os.path.normpath(release)) == name and os.path.isdir(release):
            return sorted(
                _pct_value(d)
                for d in os.listdir(release)
                if _pct_value(d) is not None and os.path.isdir(os.path.join(release, d))
            )  # type: ignore[type-var]
    return []


def _pct_value(folder: str) -> Optional[float]:
    """``'0.5pct' -> 0.5``; None for any other name."""
    try:
        return float(folder[: -len("pct")]) if folder.endswith("pct") else None
    except ValueError:
        return None


_RELEASE = ("ratio", "valid_fraction", "seed", "skip_corrupt")
register_dataset(
    "cifar10c",
    options=_RELEASE,
    ratios=STANDARD_RATIOS,
    default_ratio=1.0,
    ratios_present=lambda root: ratios_present("cifar10c", root),
    transform=cifar_transform,
    select_metric="accuracy",
)(_factory("cifar10c"))
# the DisEnt release ships 0.5 % only; DCWP tests on the whole test folder, DisEnt on its conflicting part
register_dataset(
    "bffhq",
    options=_RELEASE + ("test_protocol",),
    ratios=(0.5,),
    default_ratio=0.5,
    ratios_present=lambda root: ratios_present("bffhq", root),
    transform=faces_transform,
    select_metric="conflicting",
    test_protocols=TEST_PROTOCOLS,
)(_factory("bffhq", default_ratio=0.5))
_cmnist_folder = _factory("cmnist")


@register_dataset(
    "cmnist",
    options=_RELEASE + ("source", "mnist_root"),
    ratios=STANDARD_RATIOS,
    default_ratio=1.0,
    ratios_present=lambda root: ratios_present("cmnist", root),
    transform=digits_transform,
    select_metric="accuracy",
)
def _cmnist(root: Optional[str] = None, split: str = "train", ratio: Optional[float] = None, **options) -> BiasDataset:
    """Colored MNIST: the DisEnt release under ``root``, or generated offline when ``root`` is None
    (digits from ``source`` / ``mnist_root``; the folder options are ignored then, and vice versa)."""
    if root is None:
        gen_keys = {"source", "mnist_root", "download", "seed", "sigma", "transform"}
        return generate_cmnist(
            split, 1.0 if ratio is None else ratio, **{k: v for k, v in options.items() if k in gen_keys}
        )
    return _cmnist_folder(root, split, ratio, **{k: v for k, v in options.items() if k not in ("source", "mnist_root")})
