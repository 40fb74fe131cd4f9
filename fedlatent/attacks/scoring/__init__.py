"""Scoring of the attacks: the only attack code that reads the clients' private records.

What: each ``score_*`` compares an attack's output with the ``Truth`` (the private partitions
from ``private_index/``) beside the trivial baselines the attacker could have produced, with
one rule for the headline (``attacks.leakage``: beyond the strongest baseline) and the stranger
test for individual leakage. Why apart: the attack modules (``inversion``, ``gradient``,
``membership``, ``model_inversion``) never import ``Truth`` at all, so an attack cannot peek at
what it is scored on (a test checks their imports); ``run.py`` calls an attack, then its scorer.
"""

from fedlatent.attacks.scoring.membership import score_membership
from fedlatent.attacks.scoring.reconstruction import score_gradient_inversion, score_inversion, score_model_inversion
from fedlatent.attacks.scoring.truth import Truth, candidates, load_truth

__all__ = [
    "Truth",
    "candidates",
    "load_truth",
    "score_gradient_inversion",
    "score_inversion",
    "score_membership",
    "score_model_inversion",
]
