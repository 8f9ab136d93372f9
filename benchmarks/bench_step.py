"""Mask-learning step vs plain training step: time and peak memory ratios (prints; not a test).

Same model, same batch: a plain step trains every weight with CE; a DCWP mask step samples the
Gumbel-sigmoid masks, adds the sparsity and contrastive terms and trains the logits only.
Target: time ratio <= 1.3. Each measurement runs in a fresh process so peak memory is its own.

    python benchmarks/bench_step.py [--steps 20] [--device cpu|cuda]
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

CASES = [("cnn", 28, 256), ("resnet18", 64, 64)]


def worker(mode: str, model_name: str, size: int, batch: int, steps: int, device: str) -> dict:
    from dcwp_prune import MaskScores, attach_masks, create_model
    from dcwp_prune.models import FeatureTap
    from dcwp_prune.training.objectives import add_sparsity_grad_, supcon_loss

    torch.manual_seed(0)
    dev = torch.device(device)
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

    def step():
        with tap:
            logits = model(x)
        loss = F.cross_entropy(logits, y)
        if mode == "mask":  # as learn_mask_scores does it
            loss = loss + 0.05 * supcon_loss(tap.features, y, flags)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if mode == "mask":
            add_sparsity_grad_(scores.parameters(), 1e-8)
        opt.step()

    for _ in range(3):
        step()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"step_s": statistics.median(times), "peak_bytes": peak, "base_rss_kb": base_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--worker", nargs=4, metavar=("MODE", "MODEL", "SIZE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mode, model, size, batch = args.worker
        print(json.dumps(worker(mode, model, int(size), int(batch), args.steps, args.device)))
        return
    memory = "peak CUDA memory" if args.device == "cuda" else "peak process RSS"
    for model, size, batch in CASES:
        res = {}
        for mode in ("plain", "mask"):
            out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--device", args.device,
                                  "--worker", mode, model, str(size), str(batch)], capture_output=True, text=True, check=True)
            res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        t = res["mask"]["step_s"] / res["plain"]["step_s"]
        m = res["mask"]["peak_bytes"] / res["plain"]["peak_bytes"]
        print(f"{model:>8} {size}px batch {batch} on {args.device}: plain {res['plain']['step_s'] * 1000:.1f} ms, "
              f"mask {res['mask']['step_s'] * 1000:.1f} ms, time ratio {t:.2f} (target <= 1.3); "
              f"{memory} ratio {m:.2f}")


if __name__ == "__main__":
    main()
