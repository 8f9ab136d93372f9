"""Transforms per kind of data (the official code's ``data/data_loader.py``), applied to float CHW tensors in [0, 1].

Each dataset's :class:`~dcwp_prune.data.DatasetSpec` names its transform; :func:`default_transform`
asks the spec, so a new dataset brings its transform with its registration.
"""

from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor
from torchvision import transforms as T

from .base import dataset_spec

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "cifar_transform",
    "default_transform",
    "digits_transform",
    "faces_transform",
    "fixes_size",
    "imagenet_transform",
]

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
Transform = Optional[Callable[[Tensor], Tensor]]


def digits_transform(split: str, image_size: Optional[int] = None) -> Transform:
    """Colored MNIST: none (28 px, no normalisation); ``image_size`` resizes for a model that needs it."""
    return T.Resize(image_size, antialias=True) if image_size else None


def cifar_transform(split: str, image_size: Optional[int] = None) -> Transform:
    """CIFAR10-C: crop 32 (pad 4) + flip for training, CIFAR normalisation."""
    size = image_size or 32
    ops = [T.Resize(size, antialias=True)] if image_size else []
    if split == "train":
        ops += [T.RandomCrop(size, padding=4), T.RandomHorizontalFlip()]
    return T.Compose(ops + [T.Normalize(CIFAR_MEAN, CIFAR_STD)])


def faces_transform(split: str, image_size: Optional[int] = None) -> Transform:
    """BFFHQ: resize 128 (+ flip for training), CIFAR normalisation (as the official code)."""
    size = image_size or 128
    ops = [T.Resize((size, size), antialias=True)] + ([T.RandomHorizontalFlip()] if split == "train" else [])
    return T.Compose(ops + [T.Normalize(CIFAR_MEAN, CIFAR_STD)])


def imagenet_transform(split: str, image_size: Optional[int] = None) -> Transform:
    """CelebA, Waterbirds, CSV datasets: random-resized crop 224 + flip; test resize 256 + centre crop."""
    size = image_size or 224
    if split == "train":
        ops = [
            T.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
            T.RandomHorizontalFlip(),
        ]
    else:
        ops = [T.Resize(int(size * 256 / 224), antialias=True), T.CenterCrop(size)]
    return T.Compose(ops + [T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def default_transform(dataset: str, split: str, image_size: Optional[int] = None) -> Transform:
    """The DCWP transform of ``dataset`` for ``split`` (its spec's; ImageNet-style when it names none)."""
    build = dataset_spec(dataset).transform or imagenet_transform
    return build(split, image_size)


def fixes_size(transform: Transform) -> bool:
    """Whether ``transform`` gives every image one size (a crop of fixed size, or a resize to a pair)."""
    ops = getattr(transform, "transforms", [transform] if transform is not None else [])
    for op in ops:
        if isinstance(op, (T.RandomResizedCrop, T.CenterCrop, T.RandomCrop)):
            return True
        if isinstance(op, T.Resize) and isinstance(op.size, (tuple, list)) and len(op.size) == 2:
            return True
    return False
