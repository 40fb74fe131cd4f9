"""Tests for fedlatent.learning.seeding: named, reproducible, distinct streams; init seeding is local."""

from __future__ import annotations

import torch

from fedlatent.learning.seeding import generator, seeded, seeded_init


def draw(g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2**31 - 1, (8,), generator=g)


def test_generator_reproducible_and_distinct():
    assert torch.equal(draw(generator(3, 1, 2)), draw(generator(3, 1, 2)))
    assert not torch.equal(draw(generator(3, 1, 2)), draw(generator(3, 2, 1)))
    assert not torch.equal(draw(generator(3, 1, 2)), draw(generator(4, 1, 2)))
    # Tuples differing only by trailing zeros are different streams; the apps use both forms,
    # e.g. client 0's encoder round 1 (0, 1, 0) and the server's latent-share classifier (0, 1).
    assert not torch.equal(draw(generator(3, 0, 1, 0)), draw(generator(3, 0, 1)))
    assert not torch.equal(draw(generator(3, 0)), draw(generator(3)))


def test_seeded_inits_are_reproducible_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with seeded(generator(0, 1)):
        a = torch.nn.Linear(4, 2).weight.detach().clone()
    with seeded(generator(0, 1)):
        b = torch.nn.Linear(4, 2).weight.detach().clone()
    with seeded_init(7):
        c = torch.nn.Linear(4, 2).weight.detach().clone()
    with seeded_init(7):
        d = torch.nn.Linear(4, 2).weight.detach().clone()
    assert torch.equal(a, b) and torch.equal(c, d) and not torch.equal(a, c)
    assert torch.equal(torch.rand(3), expected)  # the caller's stream is where it was
