"""Debias and prune *your own* torchvision model with DCWP's stage functions and your own DataLoaders.

    python examples/debias_your_model.py            # resnet18 on offline Colored MNIST, a few minutes on CPU
    python examples/debias_your_model.py --tiny     # a smoke run (seconds)

Your batches must carry (images, labels, bias labels, sample ids), e.g. a dcwp_prune dataset
(`create_dataset`) or your own Dataset returning such tuples. Bias labels are used for evaluation only.
"""

import argparse

import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision.transforms import Resize

from dcwp_prune import (
    BiasedTrainConfig,
    FinetuneConfig,
    InfiniteBatchSampler,
    MaskLearnConfig,
    dcwp_global_unstructured,
    evaluate,
    finetune,
    generate_cmnist,
    learn_mask_scores,
    mine_conflicting,
    train_biased_model,
    upweight,
)


def endless(dataset, batch_size, weights=None, seed=0):
    """An endless stream of (optionally weighted) batches: stages count iterations, not epochs."""
    sampler = InfiniteBatchSampler(len(dataset), batch_size, weights, seed=seed)
    while True:
        yield from DataLoader(dataset, batch_sampler=sampler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="smoke-test sizes")
    args = parser.parse_args()
    torch.manual_seed(0)
    steps = (4, 4, 4) if args.tiny else (300, 200, 100)  # stage-1, mask, fine-tune iterations
    size = 16 if args.tiny else 32

    # Your data and model. Here: offline Colored MNIST (1 % conflicting) and an untrained resnet18.
    train = generate_cmnist("train", ratio=1.0, transform=Resize(size, antialias=True))
    test = generate_cmnist("test", transform=Resize(size, antialias=True))
    if args.tiny:
        train, test = train.subset(range(0, 4000, 16)), test.subset(range(0, 500, 5))
    model = torchvision.models.resnet18(num_classes=10)  # f_D: the network to debias and prune
    biased = torchvision.models.resnet18(num_classes=10)  # f_B: same architecture, trained with GCE

    # Stage 1: f_D with plain CE (skip it if your model is already trained), f_B with GCE.
    cfg = BiasedTrainConfig(iterations=steps[0], lr=1e-3)
    train_biased_model(biased, endless(train, 64), cfg, model_d=model)
    print("vanilla   test accuracy", round(evaluate(model, DataLoader(test, batch_size=256), 10)["accuracy"], 4))

    # Stage 2: the samples the biased model gets wrong are treated as bias-conflicting.
    mined = mine_conflicting(
        "wrong", train.ids, labels_loader=DataLoader(train, batch_size=256), model_b=biased, truth=train.conflicting
    )
    print(f"mined {mined.count} samples, precision {mined.precision}, recall {mined.recall}")

    # Stage 3: learn mask logits on the frozen model, mined samples upweighted x80.
    weights = upweight(mined.flags_for(train.ids), 80.0)
    scores = learn_mask_scores(
        model,
        endless(train, 64, weights, seed=1),
        mined.flags_for,
        MaskLearnConfig(iterations=steps[1], lambda_sparse=1e-6, eval_every=0),
    )

    # Prune with torch.nn.utils.prune through DCWPMethod (DCWP's rule: keep logit >= 0), then fine-tune.
    dcwp_global_unstructured(model, scores)
    finetune(
        model, endless(train, 64, weights, seed=2), mined.flags_for, FinetuneConfig(iterations=steps[2], eval_every=0)
    )
    result = evaluate(model, DataLoader(test, batch_size=256), 10)
    print(f"DCWP      test accuracy {result['accuracy']:.4f} at sparsity {scores.sparsity():.3f}")


if __name__ == "__main__":
    main()
