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
