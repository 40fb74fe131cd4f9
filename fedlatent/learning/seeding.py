"""Seeding: every random step of fedlatent draws from a generator named by a tuple of integers.

What: ``generator(seed, *parts)`` is the one way to get a ``torch.Generator`` for a step, e.g.
``(partition, round, 1)`` for a client's classifier round or ``(2,)`` for an attack's inverse
network; ``seeded(generator)`` and ``seeded_init(seed)`` fix torch's global RNG for a model's
initialisation (``nn.Module`` constructors draw from it) without disturbing the caller's.

Why one home: the federation, the public autoencoder and the attacks used three helpers that
each mixed seeds their own way; a run is reproducible only if every step is named the same way.

The one exception is the randomness of a DP mechanism (noise, Poisson sampling, randomized
labels): the run seed is a public setting, so noise drawn from ``generator`` could be recomputed
and subtracted by anyone who reads the run's settings. ``secret_generator`` draws its seed from
the operating system's entropy instead.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def generator(seed: int, *parts: int) -> torch.Generator:
    """A torch generator seeded by ``seed`` and a tuple naming the step, e.g. (partition, round)."""
    # len(parts) is mixed in: SeedSequence ignores trailing zeros, so (0, 1, 0) would equal (0, 1).
    state = np.random.SeedSequence([seed, len(parts), *parts]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def secret_generator() -> torch.Generator:
    """A torch generator seeded with 63 bits of OS entropy: its draws cannot be recomputed from any setting.

    torch's generator is not a cryptographically secure one (Opacus' ``secure_mode`` would be), and
    floating-point attacks on Gaussian noise (Mironov 2012) are not addressed; what this guarantees
    is that the noise is not a function of the public run seed.
    """
    return torch.Generator().manual_seed(secrets.randbits(63))


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
