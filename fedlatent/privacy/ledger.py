"""One client's privacy ledger: every ε it spent, composed, and a refusal before any overspend.

What: a ``Ledger`` holds a client's budget and the history of every private release it made —
Gaussian events (DP-SGD rounds, the latent release) composed by an Opacus accountant, and
pure-ε events (randomized response on labels) added by basic composition. ``spent()`` is the
single source of the ε a client reports; ``can_afford`` / ``record`` check an event against the
budget first, so a ledger never records one that would overspend.

Why plain values: the apps persist a ledger between Flower messages as a flat mapping
(``to_config`` / ``from_config``), so nothing here knows about Flower; a malformed state is a
clear ``LedgerStateError``, never a bare ``KeyError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedlatent.privacy.accounting import check_accounting, combined_epsilon, compose_epsilon
from fedlatent.privacy.skellam import SkellamRound

Event = tuple[float, float, int]  # (noise_multiplier, sample_rate, steps)
_STATE_KEYS = ("budget", "delta", "accountant", "noise_multipliers", "sample_rates", "steps", "pure_epsilons")
_SKELLAM_KEYS = ("skellam_l2", "skellam_l1", "skellam_variances", "skellam_sample_rates", "skellam_steps")


class BudgetExhausted(RuntimeError):
    """A step would make a client's ε exceed its budget; the step was not taken."""


class LedgerStateError(ValueError):
    """A persisted ledger state is missing keys or holds values of the wrong kind."""


@dataclass
class Ledger:
    """One client's accountant state, kept across Flower rounds; it never overspends.

    Attributes
    ----------
    budget : float
        Target ε for the whole run (``inf``: account, never refuse).
    delta, accountant : float, {"rdp", "prv"}
        Target δ and the accountant composing the Gaussian history.
    history : list of (noise_multiplier, sample_rate, steps)
        Every Gaussian event recorded so far (one per DP-SGD round or latent release).
    pure : list of float
        ε of every pure-DP event recorded so far (randomized response), added to the
        accountant's ε (basic composition, which can only overstate the total).
    skellam : list of SkellamRound
        Rounds of distributed DP-SGD (``distributed.py``), composed with the Gaussian history in
        RDP (``skellam.py``); only the RDP accountant can hold them.
    """

    budget: float
    delta: float
    accountant: str = "rdp"
    history: list[Event] = field(default_factory=list)
    pure: list[float] = field(default_factory=list)
    skellam: list[SkellamRound] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.budget > 0:
            raise ValueError(f"budget must be > 0, got {self.budget}")
        check_accounting(delta=self.delta, accountant=self.accountant)
        self.history = [(float(s), float(q), int(n)) for s, q, n in self.history]
        self.pure = [float(e) for e in self.pure]
        if any(not e >= 0 for e in self.pure):
            raise ValueError(f"pure epsilons must be >= 0, got {self.pure}")
        self.skellam = [_skellam_round(r) for r in self.skellam]
        if self.skellam and self.accountant != "rdp":
            raise ValueError("distributed-DP (Skellam) rounds are accounted in RDP: the accountant must be 'rdp'")

    def spent(self) -> float:
        """ε of everything recorded so far."""
        return self._epsilon(self.history, self.pure)

    def _epsilon(self, history: list[Event], pure: list[float], skellam: list[SkellamRound] | None = None) -> float:
        skellam = self.skellam if skellam is None else skellam
        if skellam:
            central = combined_epsilon(history, skellam, delta=self.delta)
        else:
            central = compose_epsilon(history, delta=self.delta, accountant=self.accountant)
        return central + math.fsum(pure)

    def can_afford_skellam(self, event: SkellamRound) -> bool:
        """Whether one more distributed-DP round keeps ε within the budget."""
        return self._epsilon(self.history, self.pure, [*self.skellam, event]) <= self.budget

    def record_skellam(self, event: SkellamRound) -> float:
        """Record a distributed-DP round and return the new ε; ``BudgetExhausted`` (nothing recorded) if over."""
        would = self._epsilon(self.history, self.pure, [*self.skellam, event])
        if not would <= self.budget:
            raise BudgetExhausted(
                f"privacy budget exhausted: spent epsilon={self.spent():.4g}, this distributed round would make it "
                f"{would:.4g} > budget {self.budget:.4g} (delta={self.delta:g})"
            )
        self.skellam.append(event)
        return would

    def would_spend(
        self, *, noise_multiplier: float, sample_rate: float, steps: int, pure_epsilon: float = 0.0
    ) -> float:
        """ε after also recording the given event (nothing is recorded).

        The event is one Gaussian mechanism (``steps`` steps at ``sample_rate``) and, with
        ``pure_epsilon`` > 0, a pure-ε release made with it (e.g. randomized labels).
        """
        event = (float(noise_multiplier), float(sample_rate), int(steps))
        extra = [float(pure_epsilon)] if pure_epsilon else []
        return self._epsilon([*self.history, event], [*self.pure, *extra])

    def can_afford(self, *, noise_multiplier: float, sample_rate: float, steps: int, pure_epsilon: float = 0.0) -> bool:
        """Whether the event keeps ε within the budget."""
        would = self.would_spend(
            noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps, pure_epsilon=pure_epsilon
        )
        return would <= self.budget

    def record(self, *, noise_multiplier: float, sample_rate: float, steps: int, pure_epsilon: float = 0.0) -> float:
        """Record an event and return the new ε spent; ``BudgetExhausted`` (nothing recorded) if over."""
        if not pure_epsilon >= 0:
            raise ValueError(f"pure_epsilon must be >= 0, got {pure_epsilon}")
        would = self.would_spend(
            noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps, pure_epsilon=pure_epsilon
        )
        if not would <= self.budget:
            raise BudgetExhausted(
                f"privacy budget exhausted: spent epsilon={self.spent():.4g}, this step "
                f"(noise_multiplier={noise_multiplier:g}, sample_rate={sample_rate:g}, steps={steps}, "
                f"pure epsilon={pure_epsilon:g}) would make it {would:.4g} > budget {self.budget:.4g} "
                f"(delta={self.delta:g})"
            )
        self.history.append((float(noise_multiplier), float(sample_rate), int(steps)))
        if pure_epsilon:
            self.pure.append(float(pure_epsilon))
        return would

    def to_config(self) -> dict[str, float | str | list[float] | list[int]]:
        """Flat values storable in a Flower ``ConfigRecord`` (no nesting)."""
        return {
            "budget": float(self.budget),
            "delta": float(self.delta),
            "accountant": self.accountant,
            "noise_multipliers": [s for s, _, _ in self.history],
            "sample_rates": [q for _, q, _ in self.history],
            "steps": [n for _, _, n in self.history],
            "pure_epsilons": list(self.pure),
            "skellam_l2": [r.l2 for r in self.skellam],
            "skellam_l1": [r.l1 for r in self.skellam],
            "skellam_variances": [r.variance for r in self.skellam],
            "skellam_sample_rates": [r.sample_rate for r in self.skellam],
            "skellam_steps": [r.steps for r in self.skellam],
        }

    @classmethod
    def from_config(cls, record: Mapping[str, Any]) -> Ledger:
        """Inverse of ``to_config``.

        Raises
        ------
        LedgerStateError
            If a key is missing, the event lists differ in length, or a value has the wrong kind.
        """
        missing = [k for k in _STATE_KEYS if k not in record]
        if missing:
            raise LedgerStateError(f"ledger state lacks {', '.join(missing)} (has {', '.join(sorted(record))})")
        try:
            events = list(zip(record["noise_multipliers"], record["sample_rates"], record["steps"], strict=True))
            # Ledgers written before distributed DP existed have no Skellam rounds.
            rounds = list(zip(*(record.get(k, []) for k in _SKELLAM_KEYS), strict=True))
            return cls(
                budget=float(record["budget"]),
                delta=float(record["delta"]),
                accountant=str(record["accountant"]),
                history=[(float(s), float(q), int(n)) for s, q, n in events],
                pure=[float(e) for e in record["pure_epsilons"]],
                skellam=[_skellam_round(r) for r in rounds],
            )
        except (TypeError, ValueError) as err:
            raise LedgerStateError(f"ledger state is malformed: {err}") from err


def _skellam_round(r: SkellamRound | tuple[float, float, float, float, int]) -> SkellamRound:
    if isinstance(r, SkellamRound):
        return r
    l2, l1, variance, rate, steps = r
    return SkellamRound(float(l2), float(l1), float(variance), float(rate), int(steps))
