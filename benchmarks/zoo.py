"""The plugin zoo: every torchvision classification model through ``prune_channels`` with DCWP scores.

For each model (random init, random DCWP scores, small inputs) and each of local and global
pruning at ratio 0.3: forward and backward work, the output shape is unchanged, MACs and params
went down, and the channels removed in the first pruned group are exactly the ones with the lowest
kept fraction (checked where the group has no channel grouping). Architectures that Torch-Pruning
1.6 itself cannot prune are refused up front, with the reason.

Usage::

    python -m benchmarks.zoo                  # all models -> benchmarks/results/zoo.json + docs/python-api.md
                                              # (resumes: models already in zoo.json are kept; --fresh redoes all)
    python -m benchmarks.zoo --models resnet18 vit_b_16
    python -m benchmarks.zoo --readme          # only rewrite that list from zoo.json

``tests/test_zoo.py`` runs ``check_model`` on a fast subset and checks that the docs list is the
rendering of ``zoo.json`` (so the list is never hand-written).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import traceback
from typing import Any, Dict, List, Optional

import torch
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "zoo.json")
PAGE = os.path.join(ROOT, "docs", "python-api.md")  # the docs page that lists the zoo
RATIO = 0.3


def classification_models() -> List[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def input_size(name: str) -> int:
    """The smallest convenient input: ViTs need their fixed 224, Inception v3 needs at least 75."""
    if name.startswith("vit_"):
        return 224
    if name == "inception_v3":
        return 96
    return 64


def build(name: str, num_classes: int = 10) -> torch.nn.Module:
    kwargs: Dict[str, Any] = {"weights": None, "num_classes": num_classes}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=False)
    return torchvision.models.get_model(name, **kwargs)


def _random_scores(model: torch.nn.Module, seed: int = 0) -> Any:
    from dcwp_prune import MaskScores

    scores = MaskScores.from_model(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in scores.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return scores


def _lowest_removed(
    ref: torch.nn.Module, scores_state: Dict[str, torch.Tensor], example: torch.Tensor, history: List[Any]
) -> Optional[bool]:
    """Whether the first pruned group removed exactly its lowest-importance channels (None: not checkable)."""
    import torch_pruning as tp

    from dcwp_prune import DCWPImportance, MaskScores
    from dcwp_prune.adapters.torch_pruning import _channel_groups

    name, is_out, idxs = history[0]
    ref.requires_grad_(True)
    dg = tp.DependencyGraph().build_dependency(ref.eval(), example_inputs=example)
    try:
        module = dg.model.get_submodule(name) if name else dg.model
    except AttributeError:  # an unwrapped parameter (e.g. a ViT's class token) rooted the group
        return None
    fn = (
        dg.get_pruner_of_module(module).prune_out_channels
        if is_out
        else dg.get_pruner_of_module(module).prune_in_channels
    )
    n = dg.get_out_channels(module) if is_out else dg.get_in_channels(module)
    group = dg.get_pruning_group(module, fn, list(range(n)))
    if _channel_groups(group) > 1:
        return None
    imp = DCWPImportance(MaskScores(scores_state, model=ref), min_keep=0)(group)
    if imp is None:
        return None
    lowest = sorted(torch.argsort(imp)[: len(idxs)].tolist())
    return lowest == sorted(int(i) for i in idxs)


def check_model(name: str, global_pruning: bool, ratio: float = RATIO, max_params: float = 1e12) -> Dict[str, Any]:
    """Prune one model; ``{"status": "pruned" | "refused" | "skipped" | "failed", ...checks}``."""
    from dcwp_prune import prune_channels
    from dcwp_prune.adapters.torch_pruning import UnsupportedModelError, check_structured_support

    torch.manual_seed(0)
    model = build(name)
    try:
        check_structured_support(model)
    except UnsupportedModelError as err:
        reason = str(err).split(": ", 1)[1].split(". Use")[0]
        return {"model": name, "global": global_pruning, "status": "refused", "reason": reason}
    n_params = sum(p.numel() for p in model.parameters())
    if n_params > max_params:
        return {
            "model": name,
            "global": global_pruning,
            "status": "skipped",
            "reason": f"{n_params / 1e6:.0f} M parameters: more than this zoo run's memory allows "
            f"(--max-params {max_params / 1e6:.0f}M)",
        }
    size = input_size(name)
    x = torch.randn(2, 3, size, size)
    scores = _random_scores(model)
    state = {k: v.detach().clone() for k, v in scores.items()}
    start = time.perf_counter()
    try:
        result = prune_channels(model, scores, x[:1], ratio, global_pruning=global_pruning)
        out = model.train()(x)
        out.sum().backward()
        checks = {
            "output_shape_unchanged": tuple(out.shape) == (2, 10),
            "backward": all(p.grad is not None for p in model.parameters() if p.requires_grad),
            "macs_reduced": result.macs_after < result.macs_before,
            "params_reduced": result.params_after < result.params_before,
        }
        del model, scores, out
        torch.manual_seed(0)
        checks["lowest_removed"] = _lowest_removed(build(name), state, x[:1], result.history)  # the same init again
        ok = all(v is not False for v in checks.values())
        return {
            "model": name,
            "global": global_pruning,
            "status": "pruned" if ok else "failed",
            **checks,
            "macs_ratio": round(result.macs_ratio, 3),
            "params_ratio": round(result.params_ratio, 3),
            "input": size,
            "seconds": round(time.perf_counter() - start, 1),
        }
    except Exception as err:  # recorded, the zoo goes on
        return {
            "model": name,
            "global": global_pruning,
            "status": "failed",
            "reason": f"{type(err).__name__}: {err}"[:300],
            "traceback": traceback.format_exc(limit=4),
        }


def render(results: List[Dict[str, Any]]) -> str:
    """The README list: supported models (both modes pruned and checked) and refused ones with reasons."""
    by_model: Dict[str, List[Dict[str, Any]]] = {}
    for r in results:
        by_model.setdefault(r["model"], []).append(r)
    supported = sorted(m for m, rs in by_model.items() if all(r["status"] == "pruned" for r in rs))
    refused = sorted(m for m, rs in by_model.items() if any(r["status"] == "refused" for r in rs))
    failed = sorted(m for m, rs in by_model.items() if any(r["status"] == "failed" for r in rs))
    skipped = sorted(m for m, rs in by_model.items() if any(r["status"] == "skipped" for r in rs))
    reasons: Dict[str, List[str]] = {}
    for m in refused:
        reasons.setdefault(by_model[m][0]["reason"], []).append(m)
    lines = [
        f"Pruned structurally with `DCWPImportance`, local and global, checked (forward, backward, output shape, "
        f"MACs and params down, lowest-kept channels removed) by `python -m benchmarks.zoo` "
        f"({len(supported)} of {len(by_model)} torchvision classification models):",
        "",
        ", ".join(f"`{m}`" for m in supported),
        "",
    ]
    if refused:
        lines += [f"Refused up front with the reason ({len(refused)}; prune them unstructured with `DCWPMethod`):", ""]
        lines += [f"- {', '.join(f'`{m}`' for m in ms)}: {reason}" for reason, ms in sorted(reasons.items())]
    if skipped:
        lines += [
            "",
            f"Not run by the last zoo run ({len(skipped)}, too large for its machine's memory): "
            + ", ".join(f"`{m}` ({by_model[m][0]['reason'].split(' parameters')[0]})" for m in skipped),
        ]
    if failed:
        lines += ["", f"Failed in the last zoo run ({len(failed)}): " + ", ".join(f"`{m}`" for m in failed)]
    return "\n".join(lines).rstrip() + "\n"


def rewrite_readme(text: str) -> bool:
    with open(PAGE) as f:
        old = f.read()
    pattern = re.compile(r"(<!-- figures:zoo -->\n)(.*?)(<!-- /figures:zoo -->)", re.S)
    if not pattern.search(old):
        raise SystemExit("docs/python-api.md has no <!-- figures:zoo --> block")
    new = pattern.sub(lambda m: m.group(1) + text + m.group(3), old)
    if new != old:
        from dcwp_prune._atomic import write_text

        write_text(PAGE, new)
    return new != old


def _save(results: List[Dict[str, Any]]) -> None:
    from dcwp_prune._atomic import write_json

    meta = {"torch": torch.__version__, "torchvision": torchvision.__version__, "ratio": RATIO}
    write_json(RESULTS, {"meta": meta, "results": sorted(results, key=lambda r: (r["model"], r["global"]))})


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", help="only these models (merged into zoo.json)")
    parser.add_argument(
        "--readme", action="store_true", help="only rewrite the list in docs/python-api.md from zoo.json"
    )
    parser.add_argument("--fresh", action="store_true", help="run every model again (default: resume)")
    parser.add_argument("--max-params", type=float, default=1e12, help="skip models with more parameters (memory)")
    args = parser.parse_args(argv)
    results: List[Dict[str, Any]] = []
    if os.path.isfile(RESULTS):
        with open(RESULTS) as f:
            results = json.load(f)["results"]
    if not args.readme:
        if args.models:  # run these again
            names = args.models
            results = [r for r in results if r["model"] not in names]
        else:  # resume: models already in zoo.json are kept (--fresh runs everything again)
            done = set() if args.fresh else {r["model"] for r in results}
            results = [r for r in results if r["model"] in done]
            names = [m for m in classification_models() if m not in done]
        for k, name in enumerate(names):
            for global_pruning in (False, True):
                r = check_model(name, global_pruning, max_params=args.max_params)
                results.append(r)
                print(
                    f"[{k + 1}/{len(names)}] {name} {'global' if global_pruning else 'local'}: {r['status']} "
                    f"{r.get('reason', '')[:100]}",
                    file=sys.stderr,
                    flush=True,
                )
                if r["status"] in ("refused", "skipped"):
                    results.append(dict(r, **{"global": not global_pruning}))
                    break
            _save(results)  # after every model: an interrupted zoo resumes where it stopped
        _save(results)
    with open(RESULTS) as f:
        results = json.load(f)["results"]
    changed = rewrite_readme(render(results))
    print(f"docs list {'updated' if changed else 'unchanged'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
