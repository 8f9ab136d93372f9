"""The plugin wing: DCWP scores driving existing pruning toolkits.

``torch_prune``: :class:`DCWPMethod` for ``torch.nn.utils.prune`` (and its function twins);
``torch_ao``: :class:`DCWPSparsifier` for ``torch.ao.pruning``; ``torch_pruning``:
:class:`DCWPImportance` for Torch-Pruning; ``structured``: channel pruning of a whole model with it.
These modules import only ``dcwp_prune.scores``, torch and torch-pruning.
"""
