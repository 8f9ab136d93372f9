import itertools

import pytest
import torch

from dcwp_prune.training.sampling import InfiniteBatchSampler, upweight


def test_upweight_proportions():
    flags = torch.zeros(1000, dtype=torch.bool)
    flags[:10] = True  # f = 1 %
    weights = upweight(flags, 80.0)
    sampler = InfiniteBatchSampler(1000, 500, weights, seed=0)
    drawn = torch.tensor(list(itertools.chain.from_iterable(itertools.islice(iter(sampler), 200))))
    share = float(flags[drawn].float().mean())
    expected = 80 * 0.01 / (80 * 0.01 + 0.99)  # lambda f / (lambda f + 1 - f)
    assert abs(share - expected) < 0.01
    with pytest.raises(ValueError, match="upweight factor must be > 0"):
        upweight(flags, 0)


def test_epoch_stream_is_a_permutation_per_epoch():
    sampler = InfiniteBatchSampler(12, 4, seed=3)
    first = list(itertools.chain.from_iterable(itertools.islice(iter(sampler), 3)))
    assert sorted(first) == list(range(12))


def test_resume_position_and_rank_slices():
    w = torch.arange(1.0, 51.0)
    a = list(itertools.islice(iter(InfiniteBatchSampler(50, 8, w, seed=1)), 10))
    b = list(itertools.islice(iter(InfiniteBatchSampler(50, 8, w, seed=1, start_batch=4)), 6))
    assert a[4:] == b
    r0 = list(itertools.islice(iter(InfiniteBatchSampler(50, 8, w, seed=1, rank=0, world_size=2)), 10))
    r1 = list(itertools.islice(iter(InfiniteBatchSampler(50, 8, w, seed=1, rank=1, world_size=2)), 10))
    assert [x + y for x, y in zip(r0, r1)] == a


def test_errors():
    with pytest.raises(ValueError, match="batch_size 7 must be divisible by the number of processes 2"):
        InfiniteBatchSampler(10, 7, world_size=2)
    with pytest.raises(ValueError, match="weights must be 10 non-negative numbers"):
        InfiniteBatchSampler(10, 2, torch.ones(3))
    with pytest.raises(ValueError, match="empty dataset"):
        InfiniteBatchSampler(0, 2)
