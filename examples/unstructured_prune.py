"""Unstructured DCWP pruning of a torchvision model with torch.nn.utils.prune.

    python examples/unstructured_prune.py --model resnet18 --random-scores --amount 0.9
    python examples/unstructured_prune.py --model resnet18 --scores run/scores.safetensors

The scores file is what `dcwp-prune` writes (mask logits keyed by weight name); --random-scores
draws logits instead, to try the API without a trained run.
"""

import argparse

import torch
from torch.nn.utils import prune

from dcwp_prune import DCWPMethod, MaskScores, create_model, pruned_sparsity


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
    parser.add_argument("--amount", type=float, default=None, help="fraction to prune (default: DCWP rule p >= 0.5)")
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

    size = 28 if args.model in ("cnn", "mlp") else 64  # the CMNIST nets take 28 x 28 colour digits
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        dense_out = model(x)

    # The plugin call itself: torch's global_unstructured, DCWP's method and scores.
    importance = scores.to_importance_scores(model)
    kwargs = {"amount": args.amount} if args.amount is not None else {}
    prune.global_unstructured(list(importance), pruning_method=DCWPMethod, importance_scores=importance, **kwargs)

    print(f"sparsity over scored weights: {pruned_sparsity(model):.4f}")
    for module, name in importance:
        prune.remove(module, name)  # bake the zeros into plain weights
    with torch.no_grad():
        out = model(x)
    print(f"output change vs dense: {float((out - dense_out).abs().max()):.4f} (max abs)")
    zeros = sum(int((m.weight == 0).sum()) for m, _ in importance)
    print(f"zero weights after prune.remove: {zeros} of {scores.numel()}")


if __name__ == "__main__":
    main()
