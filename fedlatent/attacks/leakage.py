"""What a reconstruction attack leaks: one rule for every family, and the stranger test.

What:
- ``beyond_baselines``: the headline of a reconstruction attack. Given per-reconstruction
  scores of the attack and of every trivial baseline the attacker could have produced from
  what it holds (aux mean, aux class mean of the label it has, the public image nearest to its
  reconstruction), each scored by exactly the attack's protocol, the leakage is the attack's
  mean minus the *strongest* baseline's mean, with a 95% interval over reconstructions, n, the
  name of the baseline that won and the whole per-baseline breakdown.
- ``stranger_test``: individual leakage. A reconstruction that resembles the records it came
  from no more than equally many class-matched records the server never saw from that client
  leaks what is typical of the class, not of anyone. Reported as the mean difference with its
  95% interval, the uploader's rank among candidates and the AUC of telling the uploader's
  records from the strangers by their similarity to the reconstructions.
- ``kind``: "individual" only when the stranger interval lies above 0, else "class-typical".

Why one function: scored against its weakest baseline (the aux mean) a gradient inversion
showed +0.19 SSIM that was -0.004 against the aux class mean it also had (issue 24). Taking the
strongest baseline by its mean never rounds in the attack's favour; the interval is of the
paired differences against that same baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score

LEVEL = 0.95


def interval(values: np.ndarray) -> dict[str, Any]:
    """Mean, Student-t 95% interval and n of ``values`` (``low``/``high`` None below 2 values)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if not len(v) or not np.isfinite(v).all():
        raise ValueError(f"need finite values, got {len(v)} with {int((~np.isfinite(v)).sum())} non-finite")
    mean = float(v.mean())
    if len(v) < 2:
        return {"mean": mean, "low": None, "high": None, "n": 1}
    half = float(stats.t.ppf(0.5 + LEVEL / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": int(len(v))}


def beyond_baselines(
    attack: np.ndarray, baselines: Mapping[str, np.ndarray], *, metric: str = "ssim"
) -> dict[str, Any]:
    """The attack's ``metric`` beyond its strongest trivial baseline (see module docstring).

    Parameters
    ----------
    attack : ndarray
        ``(n,)`` score of each reconstruction under the attack's protocol.
    baselines : mapping of str to ndarray
        Name -> ``(n,)`` score of that baseline's guess for the same reconstructions, same protocol.

    Returns
    -------
    dict
        ``leakage_<metric>`` (attack mean minus the strongest baseline mean), ``leakage_baseline``
        (its name), ``leakage_interval`` ([low, high] of the paired differences), ``leakage_n``,
        and ``by_baseline`` (name -> {metric: mean, "leakage": attack mean minus it}).
    """
    a = np.asarray(attack, dtype=np.float64)
    if not baselines:
        raise ValueError("no baseline to score the attack against")
    means = {}
    for name, b in baselines.items():
        if np.shape(b) != a.shape:
            raise ValueError(f"baseline {name!r}: shape {np.shape(b)} differs from the attack's {a.shape}")
        means[name] = float(np.mean(b))
    best = max(means, key=lambda k: means[k])
    ci = interval(a - np.asarray(baselines[best], dtype=np.float64))
    return {
        f"leakage_{metric}": float(a.mean()) - means[best],
        "leakage_baseline": best,
        "leakage_interval": [ci["low"], ci["high"]],
        "leakage_n": ci["n"],
        "by_baseline": {k: {metric: m, "leakage": float(a.mean()) - m} for k, m in means.items()},
    }


def kind(low: float | None) -> str:
    """ "individual" when the stranger test's interval lies above 0, else "class-typical"."""
    return "individual" if low is not None and low > 0 else "class-typical"


def stranger_test(
    own: np.ndarray,
    stranger: np.ndarray,
    *,
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    ranks: np.ndarray,
    candidates: int,
    clusters: np.ndarray | None = None,
) -> dict[str, Any]:
    """Individual leakage: how much more a reconstruction resembles its source than strangers.

    Parameters
    ----------
    own, stranger : ndarray
        ``(n,)`` per reconstruction: its similarity (the attack's protocol) to the records it came
        from, and to as many class-matched records the server never saw from that client.
    member_scores, nonmember_scores : ndarray
        Per record: the uploader's records and the strangers, each scored by its similarity to
        the reconstructions; their AUC is how well the reconstructions single out the uploader's data.
    ranks : ndarray
        ``(n,)`` rank of the source among ``candidates`` (1 = the most similar).
    candidates : int
        How many candidates each rank is taken among (chance rank: ``(candidates + 1) / 2``).
    clusters : ndarray, optional
        ``(n,)`` the uploader of each reconstruction. Reconstructions of one client are all
        compared with the same records of its (one draw of the data), so they are not
        independent: the differences are averaged per client and the interval is over clients
        (``individual_n``); one client alone gives no interval, hence never "individual".
    """
    d = np.asarray(own, dtype=np.float64) - np.asarray(stranger, dtype=np.float64)
    if clusters is not None:
        ids = np.asarray(clusters)
        d = np.array([d[ids == c].mean() for c in np.unique(ids)])
    ci = interval(d)
    labels = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    auc = float(roc_auc_score(labels, np.r_[member_scores, nonmember_scores]))
    return {
        "individual_ssim": ci["mean"],
        "individual_interval": [ci["low"], ci["high"]],
        "individual_n": ci["n"],
        "individual_unit": "client" if clusters is not None else "reconstruction",
        "kind": kind(ci["low"]),
        "uploader_rank": float(np.mean(ranks)),
        "rank_chance": (candidates + 1) / 2,
        "rank_candidates": candidates,
        "auc": auc,
    }
