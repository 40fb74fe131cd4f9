"""Checks before any federation starts: settings that would make every client fail, with what would work.

What: ``preflight(cfg)`` loads the data plan (a missing or corrupt data file fails here, by
name) and, for a DP run, runs on the smallest client the calibration every client will run. A
budget that cannot be met names the smallest ε that can (``smallest_epsilon``), so the fix is in
the message.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from fedlatent.config import ConfigError, RunConfig
from fedlatent.plan import build_classifier, dp_round_plan, make_plan, release_noise_std


def preflight(cfg: RunConfig) -> None:
    """Settings that would make every client fail, checked once before any federation starts.

    Loads the data plan (a missing or corrupt data file fails here, by name), then for a DP run
    checks on the smallest client what each client will: δ below 1/records (every mode, the
    release of ``latent-share`` included: its guarantee is vacuous otherwise) and a budget the
    accountant can reach for the planned DP-SGD steps (the calibration itself).

    Raises
    ------
    ConfigError
        Naming the key and the value that cannot work.
    """
    plan = make_plan(cfg)  # data files, and enough records for the clients
    if cfg.mode == "raw":
        try:  # the classifier fits the images (tanh-cnn needs 16x16)
            build_classifier(cfg, plan.dataset)
        except ValueError as err:
            raise ConfigError(f"config key 'classifier-arch' = {cfg.classifier_arch!r}: {err}") from None
    if cfg.mode == "public-only" or not cfg.dp:
        return
    smallest = min(len(c) for c in plan.client_idx)
    if not cfg.delta < 1.0 / smallest:
        raise ConfigError(
            f"config key 'delta' = {cfg.delta:g}: must be below 1/records = {1 / smallest:.2e} of the smallest "
            f"client ({smallest} records); a larger delta makes the guarantee vacuous"
        )

    def calibrate(c: RunConfig) -> None:
        if c.dp_mode == "distributed":
            from fedlatent.secure_plan import distributed_plan  # it builds on this module

            distributed_plan(c, plan)
        elif c.mode == "latent-share":
            release_noise_std(c)
        else:
            dp_round_plan(c, smallest)
            if c.encoder_dp:
                dp_round_plan(c, smallest, encoder=True)

    try:
        calibrate(cfg)
    except ValueError as err:
        least = smallest_epsilon(cfg, calibrate)
        hint = f"; the smallest epsilon this setting can meet is about {least:.3g}" if least else ""
        raise ConfigError(f"config key 'epsilon' = {cfg.epsilon:g} cannot be met: {err}{hint}") from err


def smallest_epsilon(cfg: RunConfig, calibrate: Callable[[RunConfig], None], *, steps: int = 8) -> float | None:
    """The least ``epsilon`` for which ``calibrate`` succeeds, within ~1.3%, rounded up (never in the run's favour).

    Geometric bisection between the refused ``epsilon`` and the first of its doublings that
    works; None when even 1,000 times it fails (then the setting, not the budget, is the problem).
    """

    def works(eps: float) -> bool:
        try:
            calibrate(dataclasses.replace(cfg, epsilon=eps))
        except ValueError:
            return False
        return True

    low, high = cfg.epsilon, cfg.epsilon * 2
    while not works(high):
        low, high = high, high * 2
        if high > 1000 * cfg.epsilon:
            return None
    for _ in range(steps):
        mid = math.sqrt(low * high)
        low, high = (low, mid) if works(mid) else (mid, high)
    step = 10.0 ** (math.floor(math.log10(high)) - 2)  # three significant digits, rounded up
    return math.ceil(high / step) * step
