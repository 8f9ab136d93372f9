"""Adapter overheads and structured gains, measured in one run (prints ratios; not a test).

(a) `prune.global_unstructured` on resnet50: DCWPMethod vs L1Unstructured with the same
    importance scores, median of --reps runs. Target ratio <= 1.2.
(b) resnet18 pruned structurally at pruning_ratio 0.5 with DCWPImportance: MACs and params
    ratios, CPU latency speed-up at batch 1 and 32 (inference_mode, median). Target >= 2x at 32.

    python benchmarks/bench_adapters.py [--reps 5] [--size 224] [--json out.jsonl]
"""

import argparse
import copy
import json
import platform
import statistics
import time

import torch
import torchvision
from torch.nn.utils import prune

from dcwp_prune import DCWPMethod, MaskScores, prune_channels


def random_scores(model):
    scores = MaskScores.from_model(model)
    with torch.no_grad():
        for p in scores.parameters():
            p.normal_()
    return scores


def time_global_unstructured(method, base, importance_of, reps):
    times = []
    for _ in range(reps):
        model = copy.deepcopy(base)
        imp = importance_of(model)
        start = time.perf_counter()
        prune.global_unstructured(list(imp), pruning_method=method, importance_scores=imp, amount=0.9)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def latency(model, x, reps):
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--json", help="append the results as one JSON line")
    args = parser.parse_args()
    torch.manual_seed(0)
    rec = {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
           "threads": torch.get_num_threads(), "size": args.size}

    base = torchvision.models.resnet50(num_classes=1000)
    logits = random_scores(base).state_dict()

    def importance_of(model):
        return MaskScores(logits, model=model).to_importance_scores()

    t_dcwp = time_global_unstructured(DCWPMethod, base, importance_of, args.reps)
    t_l1 = time_global_unstructured(prune.L1Unstructured, base, importance_of, args.reps)
    rec.update(global_unstructured_dcwp_s=t_dcwp, global_unstructured_l1_s=t_l1, global_unstructured_ratio=t_dcwp / t_l1)
    print(f"(a) resnet50 global_unstructured amount=0.9: DCWPMethod {t_dcwp * 1000:.0f} ms, "
          f"L1Unstructured {t_l1 * 1000:.0f} ms, ratio {t_dcwp / t_l1:.2f} (target <= 1.2)")

    dense = torchvision.models.resnet18(num_classes=1000).eval()
    pruned = copy.deepcopy(dense)
    x1 = torch.randn(1, 3, args.size, args.size)
    result = prune_channels(pruned, random_scores(pruned), x1, 0.5)
    rec.update(macs_ratio=result.macs_ratio, params_ratio=result.params_ratio)
    print(f"(b) resnet18 structured, pruning_ratio 0.5: MACs {result.macs_before / 1e9:.2f} G -> "
          f"{result.macs_after / 1e9:.2f} G ({result.macs_ratio:.2f}x), params {result.params_before / 1e6:.2f} M -> "
          f"{result.params_after / 1e6:.2f} M ({result.params_ratio:.2f}x)")
    for batch in (1, 32):
        x = torch.randn(batch, 3, args.size, args.size)
        reps = args.reps if batch > 1 else 4 * args.reps
        t0, t1 = latency(dense, x, reps), latency(pruned, x, reps)
        rec[f"latency_b{batch}_dense_ms"], rec[f"latency_b{batch}_pruned_ms"] = t0 * 1000, t1 * 1000
        rec[f"speedup_b{batch}"] = t0 / t1
        print(f"    CPU latency batch {batch:>2}: {t0 * 1000:.1f} ms -> {t1 * 1000:.1f} ms, speed-up {t0 / t1:.2f}x"
              + (" (target >= 2x)" if batch == 32 else ""))
    print(f"    ({rec['threads']} threads, torch {rec['torch']}, {args.size}px, median of {args.reps}+ runs)")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
