"""The outside fuzz's judge (``bench.server_fuzz``): what a run did with every reply, against the oracle.

What: ``judge`` finds each delivered reply's fate in the run's server view (accepted: a line of
``metrics.jsonl``; refused: an entry of ``manifest.json``'s ``rejected``, with its reason), for
checks (b) every invalid reply refused with a reason, and (c) no valid one refused (``verdict``);
``privacy_problems`` is check (d): the ε and noise multipliers of ``results.json`` against each
client's own ledger; ``reason_class`` strips a reason to what the tables count.

Why the server view and the clients' ledgers: they are what an outside audit has, the first what
the server says it did, the second the truth; nothing here reads the server's internals.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedlatent.bench.fuzz_mutations import EITHER, VALID
from fedlatent.config import RunConfig
from fedlatent.privacy.ledger import Ledger

DIVERGED = "server fit diverged"  # the learner's drop of a release it had accepted (phases.share_phase)


@dataclass(frozen=True)
class Delivery:
    """One reply that reached the server: where it answered, from which node, changed how."""

    phase: str
    rnd: int
    node: int
    kind: str


def verdict(kind: str, fate: str) -> str:
    """The count a delivery of ``kind`` with ``fate`` adds to (``""``: the server did as the oracle says)."""
    if kind in EITHER:
        return "unrecorded" if fate == "unrecorded" else ""
    if kind in VALID:
        return "" if fate == "accepted" else "valid_refused"
    return {"accepted": "violations_accepted", "unrecorded": "unrecorded"}.get(fate, "")


def reason_class(reason: str) -> str:
    """A rejection reason without its numbers and details: what the tables count."""
    if reason.startswith("client error"):
        return "client error"
    text = re.sub(r" \[[^\]]*\]", " [...]", reason.split("; expected", 1)[0])  # lists of keys: their own table
    return re.sub(r"(?<![A-Za-z\d])-?\d[\d.]*(e[+-]?\d+)?", "#", text)[:90]  # float32 keeps its name


def judge(view: Path, deliveries: list[Delivery]) -> tuple[list[tuple[Delivery, str, str]], list[dict[str, Any]]]:
    """(b), (c): each delivery's fate in the server view, ``(delivery, accepted|refused|unrecorded, reason)``.

    Matched by (phase, round, node): accepted replies are the lines of ``metrics.jsonl``,
    refused ones the ``rejected`` entries of ``manifest.json``; within one key (a duplicate) the
    valid replies take the acceptances first. Returns the fates and the rejections matching no delivery.
    """
    manifest = json.loads((view / "manifest.json").read_text()) if (view / "manifest.json").is_file() else {}
    lines = (view / "metrics.jsonl").read_text().splitlines() if (view / "metrics.jsonl").is_file() else []
    accepted = Counter((m["phase"], m["round"], m["node_id"]) for m in map(json.loads, lines))
    refused: dict[tuple[str, int, int], list[str]] = defaultdict(list)
    for r in manifest.get("rejected", []):
        refused[(r["phase"], r["round"], r["node_id"])].append(r["reason"])
    groups: dict[tuple[str, int, int], list[Delivery]] = defaultdict(list)
    for d in deliveries:
        groups[(d.phase, d.rnd, d.node)].append(d)
    fates = []
    for key, group in groups.items():
        reasons = refused.pop(key, [])
        dropped = [r for r in reasons if r.startswith(DIVERGED)]  # accepted, then dropped by the learner
        reasons = [r for r in reasons if not r.startswith(DIVERGED)] + dropped
        taken = accepted[key] - len(dropped)
        for d in sorted(group, key=lambda d: (d.kind not in VALID, d.kind not in EITHER)):
            if taken > 0:
                taken -= 1
                fates.append((d, "accepted", ""))
            else:
                reason = reasons.pop(0) if reasons else ""
                fates.append((d, "refused", reason) if reason.strip() else (d, "unrecorded", ""))  # (b): with a reason
    stray = [{"phase": k[0], "round": k[1], "node_id": k[2], "reason": r} for k, rs in refused.items() for r in rs]
    return fates, stray


def privacy_problems(
    cfg: RunConfig, results: Mapping[str, Any], ledgers: Mapping[int, Ledger | None]
) -> tuple[list[str], int]:
    """(d): ε and σ in ``results.json`` against each client's own ledger (by partition); ``(problems, over-reported)``.

    Publishing more than a client spent is conservative (counted apart); less, or another σ, is a problem.
    """
    problems, over = [], 0
    if not cfg.dp and results["epsilon"] is not None:
        problems.append(f"no DP in the run, yet epsilon {results['epsilon']} is published")
    for pid, ledger in ledgers.items() if cfg.dp else ():
        truth, published = (ledger.spent() if ledger else 0.0), results["epsilon_per_client"][str(pid)]
        if published < truth * (1 - 1e-6) - 1e-12:
            problems.append(f"partition {pid}: epsilon {published:.6g} published, the client spent {truth:.6g}")
        over += not math.isclose(published, truth, rel_tol=1e-6, abs_tol=1e-12)
        sigma = results["noise_multiplier_per_client"].get(str(pid))
        if ledger and not all(math.isclose(s, sigma or -1.0, rel_tol=1e-9) for s, _, _ in ledger.history):
            problems.append(f"partition {pid}: noise multiplier {sigma} published, the client used {ledger.history}")
    if cfg.dp and results["epsilon"] != max(results["epsilon_per_client"].values()):
        problems.append(f"epsilon {results['epsilon']} is not the largest client's")
    if level := results.get("client_level_dp"):
        if any(z != cfg.client_dp_noise for z in [level["noise_multiplier"], *level["effective_noise_multipliers"]]):
            problems.append(f"client-level noise multipliers {level['effective_noise_multipliers']} published")
    return problems, over
