"""The training wing: DCWP's stages, each a step function on the one loop of ``engine``.

``biased`` (stage 1), ``mining`` (2), ``mask`` (3), ``finetune`` (4), ``evaluate`` (5), each with its
frozen config beside it; ``masking``, ``objectives``, ``sampling``, ``passes`` and ``distributed``
are what the stages share. Nothing here writes run files: checkpoints and log records go to the
callbacks of :class:`~dcwp_prune.training.engine.Runtime`.
"""
