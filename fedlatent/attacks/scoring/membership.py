"""Scores of the membership attacks: AUC and TPR at low FPR against the drawn candidates."""

from __future__ import annotations

import numpy as np

from fedlatent.attacks.metrics import mia_scores


def score_membership(scores: np.ndarray, is_member: np.ndarray) -> dict[str, float]:
    """AUC and TPR at 1% / 0.1% FPR of membership scores (``metrics.mia_scores``)."""
    scores, is_member = np.asarray(scores, dtype=np.float64), np.asarray(is_member, dtype=bool)
    if scores.shape != is_member.shape:
        raise ValueError(f"scores {scores.shape} and is_member {is_member.shape} differ in shape")
    out = mia_scores(scores[is_member], scores[~is_member])
    return {**out, "members": float(is_member.sum()), "non_members": float((~is_member).sum())}
