"""Per-dataset hyperparameters of the official scripts (``script/train_ours_*.sh`` of github.com/ParkGeonYeong/DCWP,
with ``main.py``'s defaults), and --quick."""

from __future__ import annotations

import copy
import os
from typing import Any, Dict, Optional

from .._registry import unknown_name_message
from ..data import dataset_spec, list_datasets
from ..errors import UnknownNameError
from .config import RunConfig, expand_paths

__all__ = ["LAMBDA_UP", "PRESETS", "build_config", "merge_options", "quick_schedule"]

#: Fine-tuning upweight lambda_up per conflict ratio (%) for CMNIST and CIFAR10-C.
LAMBDA_UP = {0.5: 80.0, 1.0: 50.0, 2.0: 30.0, 5.0: 10.0}

PRESETS: Dict[str, Dict[str, Any]] = {
    "cmnist": {
        "model": "cnn",
        "data": {"name": "cmnist", "batch_size": 256},
        # Run B of the official two-run protocol trains f_D with Adam 1e-2; Run A mines with an SGD GCE f_B.
        "biased": {
            "iterations": 10000,
            "optimizer": "adam",
            "lr": 1e-2,
            "lr_decay_step": 10000,
            "lr_gamma": 0.1,
            "loss": "gce",
            "biased_iterations": 2000,
            "biased_optimizer": "sgd",
            "biased_lr": 0.1,
            "biased_weight_decay": 1e-4,
            "biased_lr_decay_step": 600,
            "biased_lr_gamma": 0.1,
        },
        "mining": {"method": "wrong"},
        "mask": {"lambda_sparse": 1e-8},
        "finetune": {"lr": 1e-3, "lr_decay_step": 1000, "lr_gamma": 0.1},
    },
    "cifar10c": {
        "model": "resnet18",
        "data": {"name": "cifar10c", "batch_size": 256},
        "biased": {"iterations": 10000, "lr": 1e-3, "lr_decay_step": 10000, "lr_gamma": 0.5, "loss": "confident_ce"},
        "mining": {"method": "ensemble"},
        "mask": {"lambda_sparse": 1e-9},
        "finetune": {"lr": 5e-4, "lr_decay_step": 10000},
    },
    "bffhq": {
        "model": "resnet18",
        "data": {"name": "bffhq", "batch_size": 64},
        "biased": {"iterations": 10000, "lr": 1e-3, "lr_decay_step": 10000, "lr_gamma": 0.5, "loss": "gce"},
        "mining": {"method": "wrong"},
        "mask": {"lambda_sparse": 1e-9},
        "finetune": {"lr": 5e-4, "lr_decay_step": 10000, "upweight": 80.0},
    },
    "celeba": {
        "model": "resnet18",
        "data": {"name": "celeba", "batch_size": 128},
        "biased": {"iterations": 10000, "lr": 1e-4, "lr_decay_step": 10000, "lr_gamma": 0.5, "loss": "gce"},
        "mining": {"method": "wrong"},
        "mask": {"lambda_sparse": 5e-6},
        "finetune": {"lr": 5e-4, "lr_decay_step": 10000, "upweight": 20.0},
    },
}


def merge_options(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    """``base`` with the nested dict ``extra`` applied on top (a deep copy; ``extra`` wins)."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = merge_options(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_config(preset: Optional[str] = None, overrides: Optional[Dict[str, Any]] = None) -> RunConfig:
    """A :class:`RunConfig` from a preset (``None``: the dataset named in overrides, if it has one)
    with ``overrides`` (a nested dict) applied on top. lambda_up follows the conflict ratio for the
    CMNIST and CIFAR10-C presets unless given.
    """
    overrides = overrides or {}
    name = preset or overrides.get("data", {}).get("name")
    base: Dict[str, Any] = {}
    if preset is not None and preset not in PRESETS:
        raise UnknownNameError(unknown_name_message("preset", preset, PRESETS))
    if name in PRESETS:
        base = PRESETS[name]
    merged = merge_options(base, overrides)
    if isinstance(merged.get("data", {}).get("root"), str):  # ~ expanded before the root is looked into
        merged["data"]["root"] = os.path.expanduser(merged["data"]["root"])
    data = merged.get("data", {})
    if data.get("ratio") is None and data.get("name", "cmnist") in list_datasets():
        # the ratio the run will use (the one present under the root, else the dataset's default), so that
        # lambda_up below and config.json follow it
        ratio = dataset_spec(data.get("name", "cmnist")).resolve_ratio(None, data.get("root"))
        if ratio is not None:
            merged = merge_options(merged, {"data": {"ratio": ratio}})
    if name in ("cmnist", "cifar10c") and "upweight" not in overrides.get("finetune", {}):
        ratio = float(merged.get("data", {}).get("ratio") or 1.0)
        if ratio in LAMBDA_UP:
            merged = merge_options(merged, {"finetune": {"upweight": LAMBDA_UP[ratio]}})
    if name == "cmnist" and merged.get("model") == "mlp":
        # The official CMNIST scripts use the CNN. Their SGD (lr 0.1) f_B does not train the BN-free MLP,
        # so with the MLP f_B follows LfF's optimiser (Adam 1e-3) unless the user set it.
        user = overrides.get("biased", {})
        lff = {
            "biased_optimizer": "adam",
            "biased_lr": 1e-3,
            "biased_weight_decay": 0.0,
            "biased_lr_decay_step": None,
            "biased_lr_gamma": None,
        }
        merged = merge_options(merged, {"biased": {k: v for k, v in lff.items() if k not in user}})
    if name in PRESETS:
        merged["preset"] = name
    if merged.get("quick"):  # a schedule value the user wrote wins over --quick's (recorded in config.json)
        merged["quick_fixed"] = [k for k in QUICK_KEYS if _has(overrides, k)]
    return expand_paths(RunConfig.from_dict(merged))


def _has(tree: Dict[str, Any], dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


#: --quick: epochs of the data present per stage (f_D, f_B, mask, fine-tune), each capped at 1/5
#: of the official iteration count (10000, 2000, 2000, 1000).
QUICK_EPOCHS = (40, 10, 25, 10)
QUICK_CAPS = (2000, 400, 400, 200)


#: The values --quick sets; one the user wrote (config file or flag) is kept (``RunConfig.quick_fixed``).
QUICK_KEYS = (
    "biased.iterations",
    "biased.lr_decay_step",
    "biased.biased_iterations",
    "biased.biased_lr_decay_step",
    "mask.iterations",
    "mask.eval_every",
    "finetune.iterations",
    "finetune.eval_every",
    "finetune.lr_decay_step",
    "checkpoint_every",
)


def quick_schedule(config: RunConfig, n_train: int) -> RunConfig:
    """A scaled-down schedule for demos, sized in epochs of the data actually present.

    On the 4,000-image offline Colored MNIST (16 batches an epoch) that is 640 / 160 / 400 / 160
    iterations; on full MNIST the caps apply. f_B's step decay keeps its official place (30 % in).
    A key of ``config.quick_fixed`` (what the user wrote) keeps its value.
    """
    per_epoch = max(1, -(-n_train // config.data.batch_size))
    it_d, it_b, it_m, it_f = (max(1, min(e * per_epoch, cap)) for e, cap in zip(QUICK_EPOCHS, QUICK_CAPS))
    b, m, f = config.biased, config.mask, config.finetune
    it_d, it_b = (
        b.iterations if "biased.iterations" in config.quick_fixed else it_d,
        b.biased_iterations if "biased.biased_iterations" in config.quick_fixed else it_b,
    )
    it_m = m.iterations if "mask.iterations" in config.quick_fixed else it_m
    it_f = f.iterations if "finetune.iterations" in config.quick_fixed else it_f
    values = {
        "biased.iterations": it_d,
        "biased.lr_decay_step": it_d,
        "biased.biased_iterations": it_b if b.biased_iterations is not None else None,
        "biased.biased_lr_decay_step": max(1, int(0.3 * it_b)) if b.biased_lr_decay_step is not None else None,
        "mask.iterations": it_m,
        "mask.eval_every": max(1, it_m // 4),
        "finetune.iterations": it_f,
        "finetune.eval_every": max(1, min(per_epoch, it_f // 4)),
        "finetune.lr_decay_step": max(f.lr_decay_step, it_f),
        "checkpoint_every": max(1, min(4 * per_epoch, it_m // 2)),
    }
    changes: Dict[str, Dict[str, Any]] = {"biased": {}, "mask": {}, "finetune": {}, "": {}}
    for key, value in values.items():
        if key not in config.quick_fixed:
            section, _, name = key.rpartition(".")
            changes[section][name] = value
    return config.replace(
        biased=b.replace(**changes["biased"]),
        mask=m.replace(**changes["mask"]),
        finetune=f.replace(**changes["finetune"]),
        quick=True,
        **changes[""],
    )
