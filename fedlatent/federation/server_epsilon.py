"""The server's own ε of every client, recomputed from the plan; claims are checked against it.

What: ``ServerAccountant`` knows what the clients are told to do (``plan.dp_round_plan``: σ, q
and steps of each DP-SGD round from the partition size; ``release_noise_std`` and the clip of
the latent release; the label ε) and replays a client's events (``PrivacyLog``) through the
same ``Ledger`` as the clients, so its figure is exact, not an estimate. ``check`` refuses a DP
reply whose claimed ``noise-multiplier``/``noise-std`` differ from the plan, or whose claimed
``epsilon-spent`` lies outside [ε of the events known so far and this one, ε of those plus every
event that may have happened] (a float tolerance apart): such a client lies, or runs another plan.
``published`` is ε of known plus possible events: never below what an honest client spent.

Why the server recomputes: a reply is untrusted input, and a privacy figure taken from one could
be 0 after a trained round (issue 25). The client still keeps its own ledger and refuses rounds
it cannot afford; this only decides what the server believes and publishes.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Mapping, Sequence

from fedlatent.config import RunConfig
from fedlatent.federation import payloads as P
from fedlatent.federation.privacy_log import PrivacyLog
from fedlatent.plan import dp_round_plan, release_noise_std, share_clip
from fedlatent.privacy.ledger import Ledger

SHARE = "share-latents"
REL_TOL = 1e-6  # the same computation on both sides: only float noise separates honest figures


class ServerAccountant:
    """Each client's ε from the run's plan and the server's record (see module docstring)."""

    def __init__(self, cfg: RunConfig, sizes: Sequence[int]) -> None:
        self.cfg, self.sizes = cfg, tuple(sizes)
        # Keyed caches: calibrating a plan's noise takes a search, and partitions mostly share a size.
        self._epsilon = functools.lru_cache(maxsize=4096)(self._compute)
        self._event = functools.lru_cache(maxsize=256)(self._event_of)

    def event(self, phase: str, pid: int) -> tuple[float, float, int, float]:
        """``(noise_multiplier, sample_rate, steps, pure_epsilon)`` of one DP event of ``phase``."""
        return self._event(phase, self.sizes[pid])

    def _event_of(self, phase: str, num_records: int) -> tuple[float, float, int, float]:
        cfg = self.cfg
        if phase == SHARE:
            labels = 0.0 if math.isinf(cfg.label_epsilon) else cfg.label_epsilon
            return release_noise_std(cfg) / (2 * share_clip(cfg)), 1.0, 1, labels
        if phase not in (P.PHASE_ENCODER, P.PHASE_CLASSIFIER):
            raise ValueError(f"phase {phase!r} makes no DP event")
        plan = dp_round_plan(cfg, num_records, encoder=phase == P.PHASE_ENCODER)
        return plan.noise_multiplier, plan.sample_rate, plan.steps, 0.0

    def epsilon(self, pid: int, phases: Sequence[str]) -> float:
        """ε of partition ``pid`` after one event of each phase in ``phases`` (any order)."""
        return self._epsilon(self.sizes[pid], tuple(sorted(Counter(phases).items())))

    def _compute(self, num_records: int, counts: tuple[tuple[str, int], ...]) -> float:
        ledger = Ledger(budget=math.inf, delta=self.cfg.delta, accountant=self.cfg.accountant)
        for phase, n in counts:
            z, q, steps, pure = self._event(phase, num_records)
            for _ in range(n):
                ledger.record(noise_multiplier=z, sample_rate=q, steps=steps, pure_epsilon=pure)
        return ledger.spent()

    def check(self, pid: int, phase: str, values: Mapping[str, float], privacy: PrivacyLog) -> None:
        """Refuse (``PayloadError``) a DP reply whose privacy figures disagree with the plan."""
        z, _, _, _ = self.event(phase, pid)
        if "noise-multiplier" in values and not math.isclose(values["noise-multiplier"], z, rel_tol=REL_TOL):
            raise P.PayloadError(f"dishonest: noise-multiplier {values['noise-multiplier']:.6g}, the plan's is {z:.6g}")
        if "noise-std" in values and not math.isclose(values["noise-std"], std := release_noise_std(self.cfg),
                                                      rel_tol=REL_TOL):  # fmt: skip
            raise P.PayloadError(f"dishonest: noise-std {values['noise-std']:.6g}, the plan's is {std:.6g}")
        this = [] if "refused" in values else [phase]
        known, possible = privacy.known.get(pid, []), privacy.possible.get(pid, [])
        low, high = self.epsilon(pid, [*known, *this]), self.epsilon(pid, [*known, *possible, *this])
        claimed = values["epsilon-spent"]
        if not low * (1 - REL_TOL) - 1e-12 <= claimed <= high * (1 + REL_TOL) + 1e-12:
            span = f"{low:.6g}" if low == high else f"[{low:.6g}, {high:.6g}]"
            raise P.PayloadError(
                f"dishonest: epsilon-spent {claimed:.6g}, the server computes {span} for partition {pid}"
            )

    def published(self, privacy: PrivacyLog) -> dict[int, float]:
        """Every partition's ε: its known and possible events (0 for a partition that released nothing)."""
        return {
            pid: self.epsilon(pid, [*privacy.known.get(pid, []), *privacy.possible.get(pid, [])])
            for pid in range(len(self.sizes))
        }

    def noise_multiplier(self, phase: str, pid: int) -> float:
        """The plan's noise multiplier of ``phase`` for partition ``pid``."""
        return self.event(phase, pid)[0]
