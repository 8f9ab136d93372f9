"""Per-dataset transforms (``../shared/DCWP.md`` section 4), applied to float CHW tensors in [0, 1]."""

from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor
from torchvision import transforms as T

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "IMAGENET_MEAN", "IMAGENET_STD", "default_transform"]

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def default_transform(dataset: str, split: str, image_size: Optional[int] = None) -> Optional[Callable[[Tensor], Tensor]]:
    """The DCWP transform of ``dataset`` for ``split``; ``image_size`` resizes for any model.

    ``cmnist``: none (28 px, no normalisation). ``cifar10c``: crop 32 (pad 4) + flip, CIFAR
    normalisation. ``bffhq``: resize 128 + flip, CIFAR normalisation. ``celeba`` / ``waterbirds``
    / ``csv``: random-resized crop 224 + flip, ImageNet normalisation; test resize 256 + centre crop.
    """
    train = split == "train"
    if dataset in ("cmnist", "cmnist-generated"):
        return T.Resize(image_size, antialias=True) if image_size else None
    if dataset == "cifar10c":
        size = image_size or 32
        ops = [T.Resize(size, antialias=True)] if image_size else []
        if train:
            ops += [T.RandomCrop(size, padding=4), T.RandomHorizontalFlip()]
        return T.Compose(ops + [T.Normalize(CIFAR_MEAN, CIFAR_STD)])
    if dataset == "bffhq":
        size = image_size or 128
        ops = [T.Resize((size, size), antialias=True)] + ([T.RandomHorizontalFlip()] if train else [])
        return T.Compose(ops + [T.Normalize(CIFAR_MEAN, CIFAR_STD)])
    size = image_size or 224
    if train:
        ops = [T.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(3 / 4, 4 / 3), antialias=True), T.RandomHorizontalFlip()]
    else:
        ops = [T.Resize(int(size * 256 / 224), antialias=True), T.CenterCrop(size)]
    return T.Compose(ops + [T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
