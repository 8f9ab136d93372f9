"""Builders of tiny dataset trees in the DisEnt layout, for loader tests."""

import os

import numpy as np
from PIL import Image


def write_image(path, size=8, seed=0, ext=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def make_release(
    root, name="cifar10c", num_classes=3, pct="1pct", per_class=4, valid=True, flat_eval=False, ext=".png"
):
    """Train align (per_class per class) + one conflicting sample per class, valid and test.

    Ids contain underscores ("img_a_<n>"). flat_eval=True puts valid/test images directly in the
    folder (the BFFHQ layout); otherwise in <class>/ subfolders.
    """
    base = os.path.join(root, name)
    n = 0
    for y in range(num_classes):
        for _ in range(per_class):
            write_image(os.path.join(base, pct, "align", str(y), f"img_a_{n}_{y}_{y}{ext}"), seed=n)
            n += 1
        b = (y + 1) % num_classes
        write_image(os.path.join(base, pct, "conflict", str(y), f"img_c_{n}_{y}_{b}{ext}"), seed=n)
        n += 1
    evals = (("valid",) if valid else ()) + ("test",)
    for split in evals:
        for y in range(num_classes):
            for b in range(num_classes):
                folder = os.path.join(base, split) if flat_eval else os.path.join(base, split, str(y))
                if split == "valid" and not flat_eval:
                    folder = os.path.join(base, pct, "valid", str(y))
                write_image(os.path.join(folder, f"e_{split}_{n}_{y}_{b}{ext}"), seed=n)
                n += 1
    return base


def make_csv_dataset(root, folds, size=8):
    """A csv dataset under ``root``: 2 classes x 2 biases, ``folds[k]`` the split value of row k.

    Returns the ``create_dataset("csv", ...)`` keywords that read it (columns file / target / place / fold).
    """
    rows = ["file,target,place,fold"]
    for i, fold in enumerate(folds):
        write_image(os.path.join(str(root), "imgs", f"{i:03d}.png"), size=size, seed=i)
        rows.append(f"{i:03d}.png,{i % 2},{(i // 2) % 2},{fold}")
    with open(os.path.join(str(root), "meta.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    return dict(
        root=str(root),
        csv="meta.csv",
        image_dir="imgs",
        path_col="file",
        label_col="target",
        bias_col="place",
        split_col="fold",
    )


#: A run config small enough for CLI tests (a few seconds on 2 cores): the offline CMNIST, tiny schedules.
TINY_TOML = """
seed = 3
[data]
ratio = 2.0
batch_size = 64
[biased]
iterations = 30
biased_iterations = 20
[mask]
iterations = 20
eval_every = 10
lr = 0.1
lambda_sparse = 1e-7
[finetune]
iterations = 20
eval_every = 10
"""
