"""DCWP masks through torch.ao.pruning: DCWPSparsifier (prepare, step, squash_mask).

    python examples/ao_sparsify.py --model resnet18 --random-scores
    python examples/ao_sparsify.py --model resnet18 --scores run/scores.safetensors --sparsity-level 0.8

The scores file is what `dcwp-prune` writes (mask logits keyed by weight name); --random-scores
draws logits instead, to try the API without a trained run.
"""

import argparse

import torch

from dcwp_prune import DCWPSparsifier, MaskScores, create_model


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
    parser.add_argument(
        "--sparsity-level",
        type=float,
        default=None,
        help="fraction of each tensor to mask (default: DCWP rule, keep logit >= 0)",
    )
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

    # The plugin calls: torch.ao.pruning's life cycle, DCWP's masks.
    sparsifier = DCWPSparsifier(scores, sparsity_level=args.sparsity_level)
    sparsifier.prepare(model, config=None)  # every scored tensor, convolutions included
    sparsifier.step()
    size = 28 if args.model in ("cnn", "mlp") else 64  # the CMNIST nets take 28 x 28 colour digits
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        masked_out = model(x)  # computed with the masks (FakeSparsity parametrizations)
    sparsifier.squash_mask()  # zeros baked into plain weights

    with torch.no_grad():
        out = model(x)
    print(f"output change from squashing: {float((out - masked_out).abs().max()):.2e} (max abs)")
    zeros = sum(int((model.get_parameter(fqn) == 0).sum()) for fqn in scores.keys())
    print(f"zero weights after squash_mask: {zeros} of {scores.numel()} ({zeros / scores.numel():.4f})")


if __name__ == "__main__":
    main()
