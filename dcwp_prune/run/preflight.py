"""Checks before a run touches its folder, and the config a resumed run continues with."""

from __future__ import annotations

import os
from typing import Any, Dict, Tuple

import torch
from torch import nn

from ..errors import InputError
from ..models import classifier_of
from ..scores import MaskScores
from .config import RunConfig
from .data import RunData
from .presets import quick_schedule
from .stage1 import LOADER_ONLY, STAGE1_KEYS
from .stages import BIASED, MINING

__all__ = ["check_model_fits", "finished_stage_keys", "load_model_file", "resume_config"]


def resume_config(given: RunConfig, saved: RunConfig, n_train: int, force_config: bool) -> RunConfig:
    """The config a resumed run continues with: the saved one, unless ``force_config`` applies the given one.

    ``given`` may differ from ``saved`` only in where and how the run executes (out, device, progress);
    any other difference is an error listing them, so that no option is ignored silently.
    """
    from .run_folder import RUNTIME_KEYS, config_differences

    expected = quick_schedule(given, n_train) if given.quick else given  # a quick run's schedule is derived
    diffs = config_differences(saved.to_dict(), expected.to_dict())
    runtime = {k: getattr(given, k) for k in RUNTIME_KEYS if k not in ("resume", "overwrite")}
    if diffs and not force_config:
        raise InputError(
            f"--resume: these options differ from the saved {os.path.join(given.out, 'config.json')}: "
            f"{'; '.join(diffs)}. Resume with the saved options (drop those flags) or pass "
            "--force-config to continue with the new ones"
        )
    frozen = finished_stage_keys(given.out)
    fixed = [d for d in diffs if d.split(":")[0].split(".")[0] in frozen and d.split(":")[0] not in LOADER_ONLY]
    if fixed:
        raise InputError(
            f"--resume --force-config cannot change what a finished stage was made with: {'; '.join(fixed)} "
            f"(the checkpoints in {given.out!r} hold its result). Start a new run for these options "
            "(another --out, or --overwrite; --stage1-from reuses this run's stage 1 where it matches)"
        )
    base = expected if diffs else saved
    return base.replace(resume=True, overwrite=False, **runtime)


def finished_stage_keys(out: str) -> Tuple[str, ...]:
    """Top-level config keys that the finished stages of run folder ``out`` were made with."""
    keys: Tuple[str, ...] = ()
    if any(os.path.isfile(os.path.join(out, "checkpoints", f"{name}.pt")) for name in (BIASED.done_file, "progress")):
        keys += STAGE1_KEYS  # a progress checkpoint holds stage 1's models or what was built from them
    if os.path.isfile(MINING.path(out)):  # type: ignore[arg-type]
        keys += ("mining",)
    return keys


def load_model_file(model: nn.Module, path: str) -> None:
    """A trained f_D from ``path``: every key and shape must match (the error names the first mismatches)."""
    from ..models import load_state_dict_checked, read_state_dict

    load_state_dict_checked(model, read_state_dict(path), path)


def check_model_fits(model: nn.Module, data: RunData, config: RunConfig) -> None:
    """Forward passes on a real sample in eval and training mode (and the structured-support check) before
    any training, on a throwaway ``model``; a ``model_file`` is loaded into it now too, so that a bad file
    fails before the run folder exists."""
    if config.model_file:
        load_model_file(model, config.model_file)
    MaskScores.from_model(model, include=config.mask.include or None, exclude=config.mask.exclude or None)  # patterns
    x = data.valid[0].image.unsqueeze(0).to(next(model.parameters()).device)
    linear_out: Dict[nn.Module, Any] = {}
    hooks = [
        m.register_forward_hook(lambda mod, _, o: linear_out.__setitem__(mod, o))
        for m in model.modules()
        if isinstance(m, nn.Linear)
    ]
    try:
        with torch.no_grad():
            logits = model.eval()(x)
            for h in hooks:
                h.remove()
            out = model.train()(torch.cat([x, x]))  # stage 1's mode: auxiliary heads run only here
    except (RuntimeError, AssertionError, ValueError, IndexError, TypeError) as err:
        # torchvision's ViT asserts its fixed input size (AssertionError); convolutions raise RuntimeError
        need = getattr(model, "image_size", None)
        fix = (
            f"pass --image-size {need} ([data] image_size)"
            if isinstance(need, int) and need != x.shape[-1]
            else "pass an --image-size the model accepts ([data] image_size)"
        )
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise InputError(
            f"model {config.model!r} cannot take {config.data.name} images of shape "
            f"{tuple(x.shape[1:])} ({first}); {fix} or choose another model"
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, data.num_classes):  # one (N, C) logits tensor
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        raise InputError(
            f"model {config.model!r} returns {got} in training mode; DCWP trains on one logits tensor of "
            f"shape (batch, {data.num_classes}): build it without auxiliary heads, or wrap it to return the logits"
        )
    try:  # stages 3 and 4 take the classifier's input as the contrastive feature
        head = classifier_of(model)
    except ValueError as err:
        raise InputError(
            f"model {config.model!r}: {err} (the contrastive term of stages 3 and 4 takes the input of the "
            "nn.Linear that produces the logits); choose another model, or prune a trained one with "
            "`dcwp-prune prune` / DCWPMethod"
        ) from None
    producer = next((m for m, o in linear_out.items() if o is logits), None)  # the nn.Linear that returned the logits
    if (producer is not None and producer is not head) or head.out_features != data.num_classes:
        names = {m: n for n, m in model.named_modules()}
        what = (
            f"the logits come from {names[producer]!r}, but its last nn.Linear is {names[head]!r} ({head})"
            if producer is not None
            else f"its last nn.Linear, {names[head]!r} ({head}), does not produce the {data.num_classes} logits"
        )
        raise InputError(
            f"model {config.model!r}: {what}; DCWP takes the input of the last nn.Linear the model "
            "registers as the contrastive feature, so define the classifier last in the model's __init__"
        )
    if config.prune.structured:
        from ..adapters.structured import check_structured_support

        check_structured_support(model)
