"""Published reference figures that sweep plots and reports mark beside fedlatent's results.

Each anchor is one number with its source (the project's ``shared/ANCHORS.md`` lists them);
they are centralized, non-federated results unless the label says otherwise, and δ = 1e-5.
Only figures comparable to a point of a sweep (same data set, an accuracy at a stated ε, or
the non-private ceiling) are here; attack anchors are quoted in the report's text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Anchor:
    """One published accuracy: data set, ε (inf = non-private), accuracy in [0, 1], label, source."""

    dataset: str
    epsilon: float
    accuracy: float
    label: str
    source: str


TRAMER_BONEH = "Tramèr & Boneh 2021, Differentially Private Learning Needs Better Features"
ANCHORS: tuple[Anchor, ...] = (
    Anchor("fashion-mnist", 3.0, 0.860, "end-to-end DP-SGD CNN", TRAMER_BONEH),
    Anchor("fashion-mnist", 3.0, 0.897, "ScatterNet + linear, DP-SGD", TRAMER_BONEH),
    Anchor("fashion-mnist", 3.0, 0.8472, "plain DP-SGD", "Fu et al. 2024, DPSUR, Table 2"),
    Anchor("fashion-mnist", 1.0, 0.8025, "plain DP-SGD", "Fu et al. 2024, DPSUR, Table 2"),
    Anchor("fashion-mnist", math.inf, 0.900, "MLP 256-128-64, no DP", "zalandoresearch/fashion-mnist benchmark"),
    Anchor("mnist", 3.0, 0.981, "end-to-end DP-SGD CNN", TRAMER_BONEH),
    Anchor("mnist", 2.0, 0.95, "PCA + MLP, DP-SGD", "Abadi et al. 2016, Deep Learning with Differential Privacy"),
    Anchor("mnist", 8.0, 0.97, "PCA + MLP, DP-SGD", "Abadi et al. 2016, Deep Learning with Differential Privacy"),
)


def anchors_for(dataset: str) -> list[Anchor]:
    """The anchors of one data set (none for ``digits``: no published DP figure on it here)."""
    return [a for a in ANCHORS if a.dataset == dataset]
