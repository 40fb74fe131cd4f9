"""Seeding: every random step of fedlatent draws from a generator named by a tuple of integers.

What: ``generator(seed, *parts)`` is the one way to get a ``torch.Generator`` for a step, e.g.
``(partition, round, 1)`` for a client's classifier round or ``(2,)`` for an attack's inverse
network; ``seeded(generator)`` and ``seeded_init(seed)`` fix torch's global RNG for a model's
initialisation (``nn.Module`` constructors draw from it) without disturbing the caller's.

Why one home: the federation, the public autoencoder and the attacks used three helpers that
each mixed seeds their own way; a run is reproducible only if every step is named the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def generator(seed: int, *parts: int) -> torch.Generator:
    """A torch generator seeded by ``seed`` and a tuple naming the step, e.g. (partition, round)."""
    # len(parts) is mixed in: SeedSequence ignores trailing zeros, so (0, 1, 0) would equal (0, 1).
    state = np.random.SeedSequence([seed, len(parts), *parts]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


@contextmanager
def seeded(gen: torch.Generator) -> Iterator[None]:
    """Seed torch's global RNG from ``gen`` (one draw) for a model's init, restoring it afterwards."""
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
        yield


@contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Seed torch's global RNG with ``seed`` itself for a model's init, restoring it afterwards.

    Every party builds the same initial model from the run seed alone (no generator to share).
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield
