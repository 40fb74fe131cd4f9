"""Run directories: ``results.json``, ``history.csv``, ``private_index/`` and plots.

``results.json`` is the contract benchmarks and audits rely on (ARCHITECTURE.md, "Run
directory"). Privacy fields are written always, and written honestly: with no DP anywhere,
``epsilon`` is null and ``end_to_end_dp`` is false; labels are marked as sent in clear
whenever latents are shared.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedlatent import __version__
from fedlatent.config import RunConfig
from fedlatent.federation.privacy_log import PrivacyLog
from fedlatent.federation.rundir import write_json_atomic
from fedlatent.federation.server_epsilon import ServerAccountant
from fedlatent.jsonable import jsonable
from fedlatent.plan import DataPlan
from fedlatent.privacy.accounting import compose_epsilon
from fedlatent.secure_plan import secure_privacy


@dataclass
class RunRecord:
    """Everything a run reports, filled in by the ServerApp as it goes."""

    cfg: RunConfig
    out: Path
    plan: DataPlan
    history: list[dict[str, Any]] = field(default_factory=list)
    accuracy: float = float("nan")
    client_accuracy: dict[int, float] | None = None
    privacy: PrivacyLog = field(default_factory=PrivacyLog)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each phase, as it ran
    public_only: dict[str, Any] | None = None  # mode public-only: both classifiers' accuracies
    rejected: list[dict[str, Any]] = field(default_factory=list)  # the server view's rejected replies
    resumes: list[dict[str, Any]] = field(default_factory=list)  # each resume: the stage it continued from

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the wall time of the block to ``seconds[phase]``."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.monotonic() - start

    def results(self, *, bytes_up: int, bytes_down: int, seconds: float) -> dict[str, Any]:
        """The ``results.json`` mapping."""
        cfg = self.cfg
        return {
            "mode": cfg.mode,
            "encoder": cfg.encoder if cfg.is_latent else None,
            "dataset": cfg.dataset,
            "num_clients": cfg.num_clients,
            "rounds": cfg.rounds,
            "partition": cfg.partition,
            "alpha": cfg.alpha if cfg.partition == "dirichlet" else None,
            "accuracy": self.accuracy,
            "accuracy_per_client": _str_keys(self.client_accuracy),
            **privacy_summary(cfg, self.privacy, [len(c) for c in self.plan.client_idx]),
            **(secure_privacy(cfg, self.plan, self.privacy.secure_rounds) if cfg.dp_mode == "distributed" else {}),
            "client_level_dp": client_level_summary(cfg, self.privacy),
            "bytes_uploaded": bytes_up,
            "bytes_downloaded": bytes_down,
            "wall_seconds": seconds,
            "phase_seconds": dict(self.seconds),
            "public_only": self.public_only,
            "rejected_replies": rejected_summary(self.rejected),
            "resumes": self.resumes,
            "history": self.history,
            "seed": cfg.seed,
            "records": {
                "public": int(len(self.plan.public_idx)),
                "private": int(sum(len(c) for c in self.plan.client_idx)),
                "test": int(len(self.plan.dataset.y_test)),
                "per_client": [int(len(c)) for c in self.plan.client_idx],
            },
            "config": jsonable(cfg.to_run_config()),
            "fedlatent_version": __version__,
        }

    def finish(self, *, bytes_up: int, bytes_down: int, seconds: float) -> dict[str, Any]:
        """Write every file of the run directory; return the results mapping."""
        results = self.results(bytes_up=bytes_up, bytes_down=bytes_down, seconds=seconds)
        write_private_index(self.out / "private_index", self.plan)
        write_history_csv(self.out / "history.csv", self.history)
        plot_history(self.out / "accuracy.png", self.history, title=f"{self.cfg.dataset} {self.cfg.mode}")
        write_json_atomic(self.out / "results.json", results)  # whole or not at all
        return results


def rejected_summary(rejected: list[dict[str, Any]]) -> dict[str, Any]:
    """How many replies the server refused, by phase and by reason (the text before any ':' detail)."""
    by_reason: dict[str, int] = {}
    by_phase: dict[str, int] = {}
    for r in rejected:
        reason = str(r.get("reason", "")).split(":<", 1)[0][:120]
        by_reason[reason] = by_reason.get(reason, 0) + 1
        by_phase[str(r.get("phase"))] = by_phase.get(str(r.get("phase")), 0) + 1
    return {"total": len(rejected), "by_phase": by_phase, "by_reason": by_reason}


def privacy_summary(cfg: RunConfig, privacy: PrivacyLog, sizes: Sequence[int] = ()) -> dict[str, Any]:
    """The privacy fields of ``results.json``, with what they do and do not cover.

    Every ε and noise multiplier is the server's own (``server_epsilon``), from the plan and the
    partitions' ``sizes``; distributed DP's come from ``secure_plan`` (merged over these).
    """
    # Distributed latent-share sends noisy label counts inside the secure sum, never a label.
    labels_in_clear = cfg.mode == "latent-share" and cfg.label_epsilon == float("inf") and cfg.dp_mode == "local"
    if cfg.mode == "public-only":  # exactly zero, not "no DP": no private record was read
        return {
            "epsilon": 0.0,
            "epsilon_per_client": {str(i): 0.0 for i in range(cfg.num_clients)},
            "delta": 0.0,
            "accountant": None,
            "noise_multiplier": None,
            "end_to_end_dp": True,
            "labels_in_clear": False,
            "refusals": [],
            "privacy_note": "public-only: trained on the public split alone; no client sent anything and no "
            "private record was read, so every client's epsilon is 0 (delta 0).",
        }
    if not cfg.dp:
        return {
            "epsilon": None,
            "epsilon_per_client": {str(i): None for i in range(cfg.num_clients)},
            "delta": None,
            "accountant": None,
            "noise_multiplier": None,
            "end_to_end_dp": False,
            "labels_in_clear": labels_in_clear,
            "refusals": [],
            "privacy_note": "No differential privacy in this run: epsilon is null and there is no formal guarantee.",
        }
    accountant = ServerAccountant(cfg, sizes) if cfg.dp_mode == "local" and sizes else None
    published = accountant.published(privacy) if accountant else {}
    per_client = {str(i): published.get(i, 0.0) for i in range(cfg.num_clients)}
    encoder_ok = cfg.mode == "raw" or cfg.encoder in ("public", "scatternet") or cfg.encoder_dp  # scatternet: no data
    end_to_end = encoder_ok and not labels_in_clear and not cfg.reproducible_noise
    notes = [
        "epsilon: record-level ("
        + (
            "replacement of one record, latent Gaussian mechanism"
            if cfg.mode == "latent-share"
            else "add/remove one record, DP-SGD"
        )
        + f") per client, composed over every round it took part in, {cfg.accountant} accountant, delta={cfg.delta}; "
        "computed by the server from the plan and its own record of who took part (a round asked of a client "
        "whose reply never came back counts as taken part), never taken from a reply."
    ]
    if cfg.encoder_dp:
        notes.append(
            f"It includes the federated encoder's DP-SGD (encoder-epsilon={cfg.encoder_epsilon} planned, composed "
            "in the same accountant as the rest)."
        )
    if cfg.mode == "latent-share" and not labels_in_clear:
        notes.append(f"It includes label-epsilon={cfg.label_epsilon} of randomized response (basic composition).")
    if labels_in_clear:
        notes.append("Labels are sent in clear: epsilon covers the latents only, so the release is not DP end to end.")
    if not encoder_ok:
        notes.append(
            f"The {cfg.encoder} encoder was trained on private data without DP: it is part of the mechanism, so "
            "the end-to-end guarantee is NOT differential privacy, whatever the noise after it."
        )
    if cfg.reproducible_noise:
        notes.append(
            "reproducible-noise is set: the noise was drawn from the public seed, so anyone who knows the run's "
            "settings can recompute and subtract it. NO differential privacy holds, whatever epsilon says."
        )
    phase = "share-latents" if cfg.mode == "latent-share" else "classifier"
    took_part = sorted(set(privacy.known) | set(privacy.possible))
    noise = {pid: accountant.noise_multiplier(phase, pid) for pid in took_part} if accountant else {}
    refusals = [{**r, "epsilon_spent": published.get(int(str(r["partition"])), 0.0)} for r in privacy.refusals]
    return {
        "epsilon": max(per_client.values()),
        "epsilon_per_client": per_client,
        "delta": cfg.delta,
        "accountant": cfg.accountant,
        "noise_multiplier": min(noise.values()) if noise else None,
        "noise_multiplier_per_client": {str(k): v for k, v in sorted(noise.items())},
        "end_to_end_dp": end_to_end,
        "labels_in_clear": labels_in_clear,
        "noise_secret": not cfg.reproducible_noise,
        "refusals": refusals,
        "privacy_note": " ".join(notes),
    }


def client_level_summary(cfg: RunConfig, privacy: PrivacyLog) -> dict[str, Any] | None:
    """Client-level DP of the global model (Flower's server-side clipping), or None when off.

    Each released round is a Gaussian mechanism on the mean of clipped updates, with the
    effective multiplier of that round; they compose without any subsampling amplification
    (Flower samples a fixed number of clients, not Poisson), which can only overstate ε.
    """
    if cfg.client_dp_noise <= 0:
        return None
    releases = list(privacy.client_level or [])
    events = [(z, 1.0, 1) for z in releases]
    eps = compose_epsilon(events, delta=cfg.delta, accountant=cfg.accountant) if events else 0.0
    return {
        "epsilon": eps,
        "delta": cfg.delta,
        "accountant": cfg.accountant,
        "noise_multiplier": cfg.client_dp_noise,
        "clip": cfg.client_dp_clip,
        "releases": len(releases),
        "effective_noise_multipliers": releases,
        "note": (
            "client-level (one client's whole data set, add/remove) DP of the global models, by Flower's "
            "DifferentialPrivacyServerSideFixedClipping. The server adds the noise after receiving every "
            "individual update, so this protects against whoever sees the global models (clients, users of "
            "the final model), NOT against the server; against the server only the record-level epsilon holds."
        ),
    }


def _str_keys(d: dict[int, float] | None) -> dict[str, float] | None:
    return None if d is None else {str(k): v for k, v in sorted(d.items())}


def write_private_index(root: Path, plan: DataPlan) -> None:
    """Which training records each client held: for scoring attacks, never for attacking."""
    root.mkdir(parents=True, exist_ok=True)
    for pid, idx in enumerate(plan.client_idx):
        np.save(root / f"client_{pid:03d}.npy", idx)
    readme = {
        "dataset": plan.dataset.name,
        "description": "client_<p>.npy: indices into the training split held privately by partition p",
        "clients": len(plan.client_idx),
    }
    (root / "manifest.json").write_text(json.dumps(readme, indent=2))


def write_history_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """Per-round metrics as CSV (nested per-client values are left to results.json)."""
    columns = sorted({k for row in history for k, v in row.items() if not isinstance(v, dict)}, key=_column_order)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


def _column_order(name: str) -> tuple[int, str]:
    return (0 if name == "round" else 1, name)


def plot_history(path: Path, history: list[dict[str, Any]], *, title: str) -> None:
    """Test accuracy per round as a PNG (skipped when no round has an accuracy)."""
    points = [(row["round"], row["accuracy"]) for row in history if "accuracy" in row]
    if not points:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
    ax.set_xlabel("round (latent-share: server epoch)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
