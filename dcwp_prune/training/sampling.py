"""Samplers: infinite resumable training batches (shuffled epochs or weighted with replacement), and
the evaluation shard of each rank.

One global stream of indices is drawn identically on every process (seeded by position, not by
a shared RNG), so a run can resume at any batch and a distributed run sees the same global
batches as a single process: rank ``r`` of ``w`` takes the ``r``-th slice of each global batch.
"""

from __future__ import annotations

from typing import Iterator, List, Optional

import torch
from torch import Tensor
from torch.utils.data import Sampler

from ..errors import InputError

__all__ = ["InfiniteBatchSampler", "ShardSampler", "upweight"]

_CHUNK = 1 << 16


def upweight(flags: Tensor, factor: float) -> Tensor:
    """Sampling weights: ``factor`` for flagged (bias-conflicting) samples, 1 for the rest."""
    if factor <= 0:
        raise InputError(f"upweight factor must be > 0, got {factor}")
    return torch.where(flags.bool(), torch.tensor(float(factor)), torch.tensor(1.0)).double()


class InfiniteBatchSampler(Sampler[List[int]]):
    """Yields this rank's slice of every global batch, forever.

    Args:
        n: dataset size.
        batch_size: global batch size (split evenly across ``world_size`` ranks).
        weights: per-sample weights for sampling with replacement; None: shuffled epochs.
        seed: stream seed; stage-specific streams should use distinct seeds.
        start_batch: global batches to skip (resume).
        rank, world_size: this process's slice.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        weights: Optional[Tensor] = None,
        seed: int = 0,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if n <= 0:
            raise InputError("cannot sample from an empty dataset")
        if batch_size % world_size:
            raise InputError(f"batch_size {batch_size} must be divisible by the number of processes {world_size}")
        if weights is not None and (len(weights) != n or bool((weights < 0).any()) or float(weights.sum()) <= 0):
            raise InputError(f"weights must be {n} non-negative numbers with a positive sum")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.weights = None if weights is None else weights.double()
        self.start_batch, self.rank, self.world_size = start_batch, rank, world_size
        self.local = batch_size // world_size

    def _chunk(self, k: int) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
        if self.weights is None:
            return torch.randperm(self.n, generator=g)
        return torch.multinomial(self.weights, _CHUNK, replacement=True, generator=g)

    def _stream(self, start: int) -> Iterator[int]:
        size = self.n if self.weights is None else _CHUNK
        k, offset = divmod(start, size)
        while True:
            yield from self._chunk(k)[offset:].tolist()
            k, offset = k + 1, 0

    def __iter__(self) -> Iterator[List[int]]:
        stream = self._stream(self.start_batch * self.batch_size)
        lo, hi = self.rank * self.local, (self.rank + 1) * self.local
        while True:
            batch = [next(stream) for _ in range(self.batch_size)]
            yield batch[lo:hi]

    def __len__(self) -> int:  # an "epoch" has no end; DataLoader only needs this for len()
        return 2**62


class ShardSampler(Sampler[int]):
    """Positions ``rank, rank + world, ...``: every sample exactly once over all ranks, no padding."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))
