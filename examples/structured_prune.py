"""Structured (channel) DCWP pruning of a torchvision model with Torch-Pruning.

    python examples/structured_prune.py --model resnet18 --random-scores --pruning-ratio 0.5
    python examples/structured_prune.py --model resnet18 --scores run/scores.safetensors
    python examples/structured_prune.py --model resnet18 --random-scores --target-macs 3

Channels are ranked by DCWPImportance: the fraction of each channel's coupled weights that DCWP keeps.
The model becomes physically smaller (fewer MACs, lower latency). With --target-macs the guarded
``prune_channels`` finds the smallest ratio that divides the MACs by that factor.
"""

import argparse
import time

import torch
import torch_pruning as tp

from dcwp_prune import DCWPImportance, MaskScores, create_model, prune_channels


def latency_ms(model: torch.nn.Module, x: torch.Tensor, reps: int = 5) -> float:
    with torch.inference_mode():
        model(x)
        start = time.perf_counter()
        for _ in range(reps):
            model(x)
    return (time.perf_counter() - start) / reps * 1000


def load_weights(path):
    """A state dict from .safetensors or a torch file (weights_only: loading it runs no code)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default="resnet18", help="any name of dcwp-prune --list-models (cnn, mlp, resnet18, ...)"
    )
    parser.add_argument("--model-file", help="its weights: a state dict, e.g. a run's RUN/f_d.safetensors")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--scores", help="mask-scores .safetensors file")
    parser.add_argument("--random-scores", action="store_true", help="use random logits instead of a file")
    parser.add_argument("--pruning-ratio", type=float, default=0.5)
    parser.add_argument(
        "--target-macs", type=float, help="a MACs reduction (3 = a third of the MACs) instead of a ratio"
    )
    parser.add_argument("--size", type=int, help="input resolution (default 28 for cnn / mlp, else 128)")
    args = parser.parse_args()

    model = create_model(args.model, args.num_classes).eval()
    if args.model_file:
        model.load_state_dict(load_weights(args.model_file))
    if args.scores:
        scores = MaskScores.load(args.scores, model=model)
    elif args.random_scores:
        torch.manual_seed(0)
        scores = MaskScores.from_model(model)
        with torch.no_grad():
            for logit in scores.parameters():
                logit.normal_()
    else:
        parser.error("pass --scores FILE or --random-scores")

    size = args.size or (28 if args.model in ("cnn", "mlp") else 128)
    x = torch.randn(8, 3, size, size)
    macs0, params0 = tp.utils.count_ops_and_params(model, x[:1])
    t0 = latency_ms(model, x)

    if args.target_macs:
        # The guarded path: the smallest ratio (up to 0.9) that reaches the MACs target; the classifier is kept.
        result = prune_channels(model, scores, x[:1], 0.9, target_macs_ratio=args.target_macs)
        print(f"pruning ratio found: {result.pruning_ratio:.3f}")
    else:
        # The plugin call itself: Torch-Pruning's pruner, DCWP's importance. The classifier stays whole.
        classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        pruner = tp.pruner.BasePruner(
            model,
            x[:1],
            importance=DCWPImportance(scores),
            pruning_ratio=args.pruning_ratio,
            ignored_layers=[classifier],
        )  # per layer
        pruner.step()

    macs1, params1 = tp.utils.count_ops_and_params(model, x[:1])
    t1 = latency_ms(model, x)
    print(f"MACs   {macs0 / 1e6:.1f} M -> {macs1 / 1e6:.1f} M ({macs0 / macs1:.2f}x)")
    print(f"params {params0 / 1e6:.2f} M -> {params1 / 1e6:.2f} M ({params0 / params1:.2f}x)")
    print(f"CPU latency, batch {len(x)}: {t0:.1f} ms -> {t1:.1f} ms ({t0 / t1:.2f}x)")
    print(f"output shape: {tuple(model(x[:1]).shape)}")


if __name__ == "__main__":
    main()
