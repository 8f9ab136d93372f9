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

# Torch-Pruning is imported on first use of these names only.
_LAZY = {
    "DCWPImportance": ("importance", "DCWPImportance"),
    "StructuredResult": ("structured", "StructuredResult"),
    "prune_channels": ("structured", "prune_channels"),
}

__all__ = [
    "DCWPImportance",
    "DCWPMethod",
    "GumbelSigmoidMask",
    "MaskScores",
    "StructuredResult",
    "__version__",
    "attach_masks",
    "dcwp_global_unstructured",
    "dcwp_unstructured",
    "detach_masks",
    "prune_channels",
    "pruned_sparsity",
    "set_mask_mode",
]


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
