"""What a run's stage 1 depends on, and the check that another run's stage 1 may stand in for it (``stage1_from``)."""

from __future__ import annotations

import os
from typing import Any, Dict

from ..errors import InputError
from .config import RunConfig, resolve_variant
from .data import resolve_data

__all__ = ["LOADER_ONLY", "STAGE1_KEYS", "check_stage1_source", "stage1_key"]


#: What a run's stage 1 depends on: a run may start from another run's stage 1 only if these agree.
STAGE1_KEYS = ("model", "weights", "model_file", "seed", "data", "biased", "cpu_amp")

#: Data options that only change how the data is loaded, never what stage 1 learned from.
LOADER_ONLY = ("data.num_workers", "data.eval_batch_size")


def stage1_key(config: RunConfig) -> Dict[str, Any]:
    """What ``config``'s stage 1 is computed from (:data:`STAGE1_KEYS`, with the variant's f_B length resolved;
    data-loading options that do not change the data left out): two runs with equal keys train the same stage 1."""
    d = config.to_dict()
    out = {k: d[k] for k in STAGE1_KEYS}
    out["data"] = {k: v for k, v in out["data"].items() if f"data.{k}" not in LOADER_ONLY}
    out["biased"] = {**out["biased"], "biased_length": resolve_variant(config)["fb_length"]}
    return out


def check_stage1_source(config: RunConfig) -> None:
    """Refuse a ``stage1_from`` folder that has no finished stage 1 or trained it differently.

    Data-loading options that do not change the data (workers, evaluation batch size) may differ;
    anything else of :data:`STAGE1_KEYS` is an error listing the differences, and so is a source that
    mined with ``oracle`` (its f_B was never trained) for a run that mines with f_B.
    """
    from .run_folder import config_differences, read_saved_config

    source = config.stage1_from
    assert source is not None
    if not os.path.isfile(os.path.join(source, "checkpoints", "stage1_biased.pt")):
        raise InputError(
            f"stage1_from {source!r} has no finished stage 1 (checkpoints/stage1_biased.pt); "
            "run it to the end of stage 1 first"
        )
    saved = resolve_data(RunConfig.from_dict(read_saved_config(source)))

    diffs = [
        d
        + (" (--fb-length; unset, it is the variant's: plus 2, else 1)" if d.startswith("biased.biased_length") else "")
        for d in config_differences(stage1_key(saved), stage1_key(config))
    ]
    if saved.mining.method == "oracle" and config.mining.method != "oracle":
        diffs.append("mining.method: the source mined with 'oracle', so its f_B was never trained")
    if diffs:
        raise InputError(
            f"stage1_from {source!r} trained stage 1 differently: {'; '.join(diffs)}. Start from a run "
            "with the same model, data, seed and [biased] options, or drop stage1_from"
        )
