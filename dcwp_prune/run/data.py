"""The data of one run: its splits (``RunData``), the dataset defaults it resolves, and its loaders
(``RunLoaders``: one seeded training stream per stage, sharded per rank, and sharded evaluation).

The training stream of stage ``k`` (1: f_D and f_B, 3: mask, 4: fine-tuning) is seeded by
``seed * 100 + k``, so every stage (and each arm of DCWP+'s stage 4) draws the same batches for the same
run seed whatever ran before it; the stage's own RNG starts from ``stage_seed`` (``run/stages.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import nn

from ..data import BiasDataset, create_dataset, dataset_spec, default_transform
from ..data.folders import check_same_size
from ..data.transforms import fixes_size
from ..training.engine import Runtime, batches, make_loader
from ..training.evaluate import evaluate
from ..training.sampling import InfiniteBatchSampler, ShardSampler
from .config import RunConfig

__all__ = ["RunData", "RunLoaders", "load_run_data", "resolve_data"]


@dataclass
class RunData:
    """The splits of one run (``train_scoring``: train with the transform the variant scores with)."""

    train: BiasDataset
    train_scoring: BiasDataset
    valid: BiasDataset
    test: BiasDataset
    num_classes: int


def resolve_data(config: RunConfig) -> RunConfig:
    """``config`` with the dataset's defaults filled in (``data.ratio``: the one ratio present under
    the root, else the dataset's default), so that ``config.json`` records what actually ran."""
    d = config.data
    ratio = dataset_spec(d.name).resolve_ratio(d.ratio, d.root)
    return config if ratio == d.ratio else config.replace(data=d.replace(ratio=ratio))


def load_run_data(config: RunConfig, score_transform: str) -> RunData:
    """Train / valid / test of ``config.data`` (``score_transform``: ``train`` or ``eval``).

    The dataset's spec says which options its factory takes; nothing here knows a dataset by name.
    """
    d = resolve_data(config).data
    spec = dataset_spec(d.name)
    opts = spec.run_options(
        {
            "ratio": d.ratio,
            "valid_fraction": d.valid_fraction,
            "seed": config.seed,
            "source": d.source,
            "mnist_root": d.mnist_root,
            "test_protocol": d.test_protocol,
            "skip_corrupt": d.skip_corrupt,
        }
    )
    spec.check_extra_options(d.options)  # before the run folder is touched: a run loads its data first
    opts.update(d.options)
    split = {
        s: create_dataset(d.name, root=d.root, split=s, transform=default_transform(d.name, s, d.image_size), **opts)
        for s in ("train", "valid", "test")
    }
    check_same_size({s: ds for s, ds in split.items() if not fixes_size(ds.transform)})
    scoring = split["train"].subset(range(len(split["train"])))
    scoring.transform = split["train"].transform if score_transform == "train" else split["test"].transform
    return RunData(split["train"], scoring, split["valid"], split["test"], split["train"].num_classes)


class RunLoaders:
    """Training streams per stage (own seed, sharded per rank) and sharded evaluation loaders of a run."""

    def __init__(self, config: RunConfig, data: RunData, rt: Runtime) -> None:
        self.config, self.data, self.rt = config, data, rt

    def train(self, stage: int, start: int, weights: Optional[torch.Tensor] = None) -> Any:
        env, d = self.rt.env, self.config.data
        sampler = InfiniteBatchSampler(
            len(self.data.train),
            d.batch_size,
            weights,
            seed=self.config.seed * 100 + stage,
            start_batch=start,
            rank=env.rank,
            world_size=env.world_size,
        )
        return batches(
            make_loader(
                self.data.train,
                batch_sampler=sampler,
                num_workers=d.num_workers,
                device=self.rt.device,
                seed=self.config.seed + stage,
            )
        )

    def eval(self, dataset: BiasDataset) -> Any:
        env = self.rt.env
        return make_loader(
            dataset,
            batch_size=self.config.data.eval_batch_size,
            sampler=ShardSampler(len(dataset), env.rank, env.world_size),
            num_workers=self.config.data.num_workers,
            device=self.rt.device,
            seed=self.config.seed,
        )

    def evaluate(self, model: nn.Module, splits: tuple = ("valid", "test")) -> Dict[str, Any]:
        return {s: evaluate(model, self.eval(getattr(self.data, s)), self.data.num_classes, self.rt) for s in splits}
