"""dcwp-prune: Debiased Contrastive Weight Pruning (Park et al., CVPR 2023) as a pruning plugin.

``DCWPMethod`` plugs into ``torch.nn.utils.prune``; ``DCWPImportance`` into Torch-Pruning;
``DCWPSparsifier`` into ``torch.ao.pruning``. All are driven by :class:`MaskScores`, the per-weight
logits that the DCWP pipeline learns.

The package has three wings over one shared object (``scores.MaskScores``): ``adapters`` (the
plugins), ``training`` (the stages, on one engine) and ``run`` (config, run folder, CLI); imports
only go down: run -> training -> data / models / adapters / metrics -> scores.
"""

from typing import Any

from .adapters.torch_prune import DCWPMethod as DCWPMethod
from .adapters.torch_prune import dcwp_global_unstructured as dcwp_global_unstructured
from .adapters.torch_prune import dcwp_unstructured as dcwp_unstructured
from .adapters.torch_prune import pruned_sparsity as pruned_sparsity
from .scores import MaskScores as MaskScores
from .training.masking import GumbelSigmoidMask as GumbelSigmoidMask
from .training.masking import attach_masks as attach_masks
from .training.masking import detach_masks as detach_masks
from .training.masking import set_mask_mode as set_mask_mode
from .version import __version__ as __version__

# Imported on first use only: Torch-Pruning (structured side) and torchvision (data, models, pipeline),
# so that `import dcwp_prune` needs torch alone.
_LAZY = {
    "BiasGroupAccuracy": ("metrics", "BiasGroupAccuracy"),
    "BiasedTrainConfig": ("training.biased", "BiasedTrainConfig"),
    "ConfigError": ("options", "ConfigError"),
    "DCWPError": ("errors", "DCWPError"),
    "DCWPImportance": ("adapters.torch_pruning", "DCWPImportance"),
    "DCWPResult": ("run.pipeline", "DCWPResult"),
    "DCWPSparsifier": ("adapters.torch_ao", "DCWPSparsifier"),
    "DataConfig": ("run.config", "DataConfig"),
    "FeatureTap": ("models", "FeatureTap"),
    "FinetuneConfig": ("training.finetune", "FinetuneConfig"),
    "GCELoss": ("training.objectives", "GCELoss"),
    "InfiniteBatchSampler": ("training.sampling", "InfiniteBatchSampler"),
    "MaskLearnConfig": ("training.mask", "MaskLearnConfig"),
    "MinedSet": ("training.mining", "MinedSet"),
    "MiningConfig": ("training.mining", "MiningConfig"),
    "PruneConfig": ("run.config", "PruneConfig"),
    "RunConfig": ("run.config", "RunConfig"),
    "RunFolderError": ("run.run_folder", "RunFolderError"),
    "StructuredResult": ("adapters.structured", "StructuredResult"),
    "bias_group_accuracy": ("metrics", "bias_group_accuracy"),
    "build_config": ("run.presets", "build_config"),
    "create_dataset": ("data", "create_dataset"),
    "create_model": ("models", "create_model"),
    "evaluate": ("training.evaluate", "evaluate"),
    "finetune": ("training.finetune", "finetune"),
    "gce_loss": ("training.objectives", "gce_loss"),
    "generate_cmnist": ("data", "generate_cmnist"),
    "learn_mask_scores": ("training.mask", "learn_mask_scores"),
    "list_datasets": ("data", "list_datasets"),
    "list_models": ("models", "list_models"),
    "load_checkpoint": ("run.checkpoint", "load_checkpoint"),
    "load_pruned_model": ("run.export", "load_pruned_model"),
    "mine_conflicting": ("training.mining", "mine_conflicting"),
    "prune_channels": ("adapters.structured", "prune_channels"),
    "register_dataset": ("data", "register_dataset"),
    "register_model": ("models", "register_model"),
    "run_dcwp": ("run.pipeline", "run_dcwp"),
    "save_checkpoint": ("run.checkpoint", "save_checkpoint"),
    "supcon_loss": ("training.objectives", "supcon_loss"),
    "train_biased_model": ("training.biased", "train_biased_model"),
    "upweight": ("training.sampling", "upweight"),
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
