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


def plot_kept(kept: Dict[str, float], path: str, title: str = "", order: Optional[List[str]] = None) -> None:
    """Horizontal bars in network order (``order``: the layer names from input to output), each with its
    kept fraction written at its end."""
    plt = _pyplot()
    layers = [k for k in (order or []) if k in kept] + [k for k in kept if k != "total" and k not in (order or [])]
    fig, ax = plt.subplots(figsize=(7.5, 0.28 * len(layers) + 1.6))
    values = [kept[k] for k in layers]
    ax.barh(range(len(layers)), values, color="#3b7dd8")
    for i, v in enumerate(values):
        ax.text(min(v, 1.0) + 0.01, i, f"{v:.1%}", va="center", fontsize=7)
    ax.set_yticks(range(len(layers)), [k.removesuffix(".weight") for k in layers], fontsize=7)
    ax.invert_yaxis()  # the first layer on top
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("fraction of weights kept")
    ax.set_ylabel("layer (input at the top)")
    ax.set_title(f"{title} kept {kept.get('total', 0):.1%} overall".strip())
    _save(fig, path)
    plt.close(fig)


def plot_group_accuracy(
    before: List[List[Optional[float]]], after: List[List[Optional[float]]], path: str, title: str = ""
) -> None:
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
                        ax.text(
                            j,
                            i,
                            f"{arr[i, j]:.2f}",
                            ha="center",
                            va="center",
                            fontsize=6,
                            color="white" if arr[i, j] < 0.5 else "black",
                        )
    fig.colorbar(im, ax=axes, shrink=0.8, label="accuracy")
    fig.suptitle(title or "test accuracy per (class, bias) group")
    _save(fig, path)
    plt.close(fig)


def plot_curves(records: List[Dict[str, Any]], path: str, title: str = "") -> None:
    """Losses of each stage (the contrastive term on its own right-hand axis, since it is an order of
    magnitude above the cross-entropy) and the fine-tuning valid / test accuracy in %."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    panels = (
        ("biased", "stage 1: f_D and f_B", ("loss_d", "loss_b"), ()),
        ("mask", "stage 3: mask learning", ("ce", "loss"), ("con",)),
        ("finetune", "stage 4: fine-tuning", ("ce", "loss"), ("con",)),
    )
    for ax, (stage, name, left, right) in zip(axes, panels):
        rows = [r for r in records if r.get("stage") == stage]
        handles = []
        for key in left:
            pts = [(r["iteration"], r[key]) for r in rows if key in r]
            if pts:
                handles += ax.plot(*zip(*pts), label=key)
        ax.set_ylabel("loss")
        twin_keys = [k for k in right if any(k in r for r in rows)]
        if twin_keys:
            twin = ax.twinx()
            for key in twin_keys:
                pts = [(r["iteration"], r[key]) for r in rows if key in r]
                handles += twin.plot(*zip(*pts), label=f"{key} (right axis)", color="#c44e52", alpha=0.8)
            twin.set_ylabel("contrastive loss")
        ax.set_title(name)
        ax.set_xlabel("iteration")
        if handles:
            ax.legend(handles=handles, fontsize=7)
        else:
            ax.text(
                0.5,
                0.5,
                "no records (stage reused or not run)",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=8,
            )
    ax = axes[3]
    evals = [r for r in records if r.get("stage") == "finetune_eval"]
    handles = []
    for split in ("valid", "test"):
        pts = [
            (r["iteration"], 100 * r[split]["accuracy"])
            for r in evals
            if r.get(split) and r[split].get("accuracy") is not None
        ]
        if pts:
            handles += ax.plot(*zip(*pts), marker="o", label=f"{split} accuracy")
    ax.set_title("stage 4: evaluation")
    ax.set_xlabel("iteration")
    ax.set_ylabel("accuracy (%)")
    if handles:
        ax.legend(handles=handles, fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
