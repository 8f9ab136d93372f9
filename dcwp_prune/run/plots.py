"""PNG plots of a run: kept fraction per layer, (class, bias) group accuracy before/after, curves."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from .._atomic import atomic_path

__all__ = ["plot_curves", "plot_group_accuracy", "plot_kept"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def plot_kept(kept: Dict[str, float], path: str, title: str = "") -> None:
    """Horizontal bars: fraction of weights kept per scored layer."""
    plt = _pyplot()
    layers = [k for k in kept if k != "total"]
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(layers) + 1.5))
    ax.barh(range(len(layers)), [kept[k] for k in layers], color="#3b7dd8")
    ax.set_yticks(range(len(layers)), [k.removesuffix(".weight") for k in layers], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of weights kept")
    ax.set_title(f"{title} kept {kept.get('total', 0):.1%} overall".strip())
    _save(fig, path)
    plt.close(fig)


def plot_group_accuracy(before: List[List[Optional[float]]], after: List[List[Optional[float]]], path: str,
                        title: str = "") -> None:
    """Two heatmaps (rows: class, columns: bias label): vanilla vs DCWP; empty groups blank."""
    import numpy as np

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, grid, name in zip(axes, (before, after), ("vanilla", "DCWP")):
        arr = np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=float)
        im = ax.imshow(arr, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(name)
        ax.set_xlabel("bias label")
        ax.set_ylabel("class")
        if arr.shape[0] <= 10:
            for i in range(arr.shape[0]):
                for j in range(arr.shape[1]):
                    if not np.isnan(arr[i, j]):
                        ax.text(j, i, f"{arr[i, j]:.2f}", ha="center", va="center", fontsize=6,
                                color="white" if arr[i, j] < 0.5 else "black")
    fig.colorbar(im, ax=axes, shrink=0.8, label="accuracy")
    fig.suptitle(title or "test accuracy per (class, bias) group")
    _save(fig, path)
    plt.close(fig)


def plot_curves(records: List[Dict[str, Any]], path: str, title: str = "") -> None:
    """Losses of each stage and the fine-tuning valid / test accuracy, from metrics.jsonl records."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    panels = (("biased", ("loss_d", "loss_b")), ("mask", ("ce", "con", "loss")), ("finetune", ("ce", "con", "loss")))
    for ax, (stage, keys) in zip(axes, panels):
        rows = [r for r in records if r.get("stage") == stage]
        for key in keys:
            pts = [(r["iteration"], r[key]) for r in rows if key in r]
            if pts:
                ax.plot(*zip(*pts), label=key)
        ax.set_title(stage)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7)
    ax = axes[3]
    evals = [r for r in records if r.get("stage") == "finetune_eval"]
    for split in ("valid", "test"):
        pts = [(r["iteration"], r[split]["accuracy"]) for r in evals if r.get(split)]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=f"{split} accuracy")
    ax.set_title("fine-tuning evaluation")
    ax.set_xlabel("iteration")
    ax.legend(fontsize=7)
    fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)
