"""The server's own record of every client's private releases, from which it computes ε.

What: ``PrivacyLog`` holds, per partition, the DP events the server *knows* happened (an
accepted DP reply of a phase: one DP-SGD round, or the one latent release) and those that *may*
have happened (a DP round or release the server asked for whose reply never came back, or was
rejected: the client may have trained all the same), plus refusals and the client-level and
distributed-DP records. ``server_epsilon`` turns it into each client's ε; nothing here is taken
from what a client claims (issue 25: a reply whose ``epsilon-spent`` went down was published).
It is checkpointed whole, so a resumed run keeps counting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from flwr.app import Message

from fedlatent.federation import payloads as P

log = logging.getLogger("fedlatent")


@dataclass
class PrivacyLog:
    """DP events per partition (known and possible), refusals, client-level and distributed rounds."""

    known: dict[int, list[str]] = field(default_factory=dict)  # partition -> phase of each accepted DP event
    possible: dict[int, list[str]] = field(default_factory=dict)  # partition -> phase of each unanswered one
    refusals: list[dict[str, object]] = field(default_factory=list)
    client_level: list[float] | None = None  # effective multiplier of each client-level DP release
    secure_rounds: dict[int, list[int]] = field(default_factory=dict)  # distributed DP: round -> partitions summed

    def note(self, msg: Message, *, pid: int, phase: str, rnd: int, dp: bool = False) -> bool:
        """Record an accepted reply: a DP event of ``phase`` unless refused; return True when it refused.

        ``dp``: the phase is one of the run's DP phases (its replies are private releases).
        """
        refused = "refused" in msg.content.metric_records[P.METRICS]
        if dp and not refused:
            self.known.setdefault(pid, []).append(phase)
        if refused:
            log.warning("partition %s refused %s round %s: its privacy budget would be exceeded", pid, phase, rnd)
            self.refusals.append({"phase": phase, "round": rnd, "partition": pid})
        return refused

    def missed(self, pids: list[int], phase: str) -> None:
        """A DP round or release of ``phase`` was asked of these partitions and no reply was accepted."""
        for pid in pids:
            self.possible.setdefault(pid, []).append(phase)
