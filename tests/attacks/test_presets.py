"""Tests for fedlatent.attacks.presets: one registry of families and efforts, matched by the runner."""

from __future__ import annotations

from fedlatent.attacks.presets import FAMILIES, PRESET_NAMES, PRESETS
from fedlatent.attacks.run import ATTACKS
from fedlatent.cli import build_parser


def test_every_preset_sets_every_family_and_the_runner_runs_them():
    assert set(ATTACKS) == set(FAMILIES)
    for name in PRESET_NAMES:
        assert set(PRESETS[name]) == set(FAMILIES), name


def test_the_cli_offers_exactly_the_registry():
    verbs = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    attack = {a.dest: a for a in verbs["attack"]._actions}
    compare = {a.dest: a for a in verbs["compare"]._actions}
    assert tuple(attack["preset"].choices) == PRESET_NAMES
    assert tuple(compare["attack"].choices) == (*PRESET_NAMES, "none")  # compare may also skip the attacks
    assert tuple(attack["only"].choices) == FAMILIES == tuple(compare["only"].choices)


def test_quick_latent_inversion_scores_a_seeded_aligned_sample_of_every_partition() -> None:
    import numpy as np

    from fedlatent.attacks.run import _sampled
    from fedlatent.attacks.scoring import Truth
    from fedlatent.attacks.view import AttackerView
    from fedlatent.config import RunConfig

    sizes = {0: 300, 1: 100}
    # each latent's first coordinate and each record's first pixel carry the record's number
    latents = {p: (np.arange(n, dtype=np.float32)[:, None] + 1000 * p, np.arange(n) % 10) for p, n in sizes.items()}
    truth = Truth(
        client_x={p: (np.arange(n, dtype=np.float32) + 1000 * p)[:, None, None, None] for p, n in sizes.items()},
        client_y={p: np.arange(n) % 10 for p, n in sizes.items()},
    )
    empty = np.zeros((0, 1, 1, 1), np.float32)
    view = AttackerView(RunConfig(), empty, np.zeros(0), empty, np.zeros(0), 10, None, {}, latents=latents)
    small, kept = _sampled(view, truth, 100, seed=0)
    assert {p: len(z) for p, (z, _) in small.latents.items()} == {0: 75, 1: 25}  # the same share of each
    for p, (z, y) in small.latents.items():
        assert np.array_equal(z[:, 0], kept.client_x[p][:, 0, 0, 0]) and np.array_equal(y, kept.client_y[p])
    again, _ = _sampled(view, truth, 100, seed=0)
    assert all(np.array_equal(again.latents[p][0], small.latents[p][0]) for p in sizes)  # seeded
