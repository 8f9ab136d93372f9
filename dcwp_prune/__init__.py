"""dcwp-prune: Debiased Contrastive Weight Pruning (Park et al., CVPR 2023) as a pruning plugin.

``DCWPMethod`` plugs into ``torch.nn.utils.prune``; ``DCWPImportance`` into Torch-Pruning. Both are
driven by :class:`MaskScores`, the per-weight logits that the DCWP pipeline learns.
"""

from typing import Any

from .masking import GumbelSigmoidMask as GumbelSigmoidMask
from .masking import attach_masks as attach_masks
from .masking import detach_masks as detach_masks
from .masking import set_mask_mode as set_mask_mode
from .prune_method import DCWPMethod as DCWPMethod
from .prune_method import dcwp_global_unstructured as dcwp_global_unstructured
from .prune_method import dcwp_unstructured as dcwp_unstructured
from .prune_method import pruned_sparsity as pruned_sparsity
from .scores import MaskScores as MaskScores
from .version import __version__ as __version__

# Imported on first use only: Torch-Pruning (structured side) and torchvision (data, models, pipeline),
# so that `import dcwp_prune` needs torch alone.
_LAZY = {
    "BiasGroupAccuracy": ("metrics", "BiasGroupAccuracy"),
    "BiasedTrainConfig": ("config", "BiasedTrainConfig"),
    "ConfigError": ("config", "ConfigError"),
    "DCWPImportance": ("importance", "DCWPImportance"),
    "DCWPResult": ("pipeline", "DCWPResult"),
    "DataConfig": ("config", "DataConfig"),
    "FeatureTap": ("models", "FeatureTap"),
    "FinetuneConfig": ("config", "FinetuneConfig"),
    "GCELoss": ("objectives", "GCELoss"),
    "InfiniteBatchSampler": ("sampling", "InfiniteBatchSampler"),
    "MaskLearnConfig": ("config", "MaskLearnConfig"),
    "MinedSet": ("mining", "MinedSet"),
    "MiningConfig": ("config", "MiningConfig"),
    "PruneConfig": ("config", "PruneConfig"),
    "RunConfig": ("config", "RunConfig"),
    "RunFolderError": ("run_folder", "RunFolderError"),
    "StructuredResult": ("structured", "StructuredResult"),
    "bias_group_accuracy": ("metrics", "bias_group_accuracy"),
    "build_config": ("presets", "build_config"),
    "create_dataset": ("data", "create_dataset"),
    "create_model": ("models", "create_model"),
    "evaluate": ("evaluation", "evaluate"),
    "finetune": ("finetuning", "finetune"),
    "gce_loss": ("objectives", "gce_loss"),
    "generate_cmnist": ("data", "generate_cmnist"),
    "learn_mask_scores": ("learner", "learn_mask_scores"),
    "list_datasets": ("data", "list_datasets"),
    "list_models": ("models", "list_models"),
    "load_checkpoint": ("checkpoint", "load_checkpoint"),
    "load_pruned_model": ("export", "load_pruned_model"),
    "mine_conflicting": ("mining", "mine_conflicting"),
    "prune_channels": ("structured", "prune_channels"),
    "run_dcwp": ("pipeline", "run_dcwp"),
    "save_checkpoint": ("checkpoint", "save_checkpoint"),
    "supcon_loss": ("objectives", "supcon_loss"),
    "train_biased_model": ("biased", "train_biased_model"),
    "upweight": ("sampling", "upweight"),
    "write_cmnist": ("data", "write_cmnist"),
}

__all__ = sorted(
    [
        "DCWPMethod",
        "GumbelSigmoidMask",
        "MaskScores",
        "__version__",
        "attach_masks",
        "dcwp_global_unstructured",
        "dcwp_unstructured",
        "detach_masks",
        "pruned_sparsity",
        "set_mask_mode",
        *_LAZY,
    ],
    key=str.lower,
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        try:
            module = importlib.import_module(f".{module_name}", __name__)
        except ModuleNotFoundError as err:
            if err.name == "torch_pruning":
                raise ImportError(
                    f"{name} requires torch-pruning. Install it with `pip install 'torch-pruning>=1.6,<1.7'`"
                ) from err
            raise
        return getattr(module, attr)
    raise AttributeError(f"module 'dcwp_prune' has no attribute {name!r}")
