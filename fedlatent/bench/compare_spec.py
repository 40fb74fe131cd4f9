"""What ``fedlatent compare`` runs: a built-in sweep of every mode and encoder, without DP and at ε.

What: ``compare_spec(overrides, ...)`` turns the command's options into a ``SweepSpec``: ``raw``
once, each latent mode with each encoder, each without DP and at ``epsilon``, and (added by the
sweep) the public-only bar. The data set picks a profile of defaults (``PROFILES``); an option
given on the command line wins over it. ``what_was_cut`` says, for the output, where a profile
departs from the full setting it stands for.

Why a sweep: ``compare`` then gets the sweep's resumable points, its report (``report.html``
with figures) and its tables for free, and a compare directory is one ``fedlatent report`` reads.
Why profiles: the default run must answer the question where private data matters
(Fashion-MNIST with 1% public data, ``experiments/claims-fmnist.toml``) in minutes on two cores;
digits stays a one-minute smoke run. The cuts are rounds and epochs only: the data, the public
split, the clients and the budget are the full setting's, so the bar and ε mean the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fedlatent.bench.sweep import SweepSpec

MODES = ("raw", "latent-fedavg", "latent-share")
ENCODERS = ("public", "scatternet")  # the trained-on-public autoencoder and the data-free reference
# Default encoder of each latent mode, so that the default fits minutes: latent-fedavg with
# ScatterNet and a linear head (its literature: Tramèr & Boneh 2021's DP-SGD on ScatterNet
# features), latent-share with the public autoencoder (the seed's latent release: ScatterNet
# latents are 3,969 floats per record, ~1 GB for Fashion-MNIST, and noise on that many
# coordinates swamps them). ``--encoders public scatternet`` runs every pair.
PAIRS = {"latent-fedavg": ("scatternet",), "latent-share": ("public",)}
EPSILON = 3.0
ATTACKS = ("latent-inversion", "gradient-inversion", "membership")  # the quick families: seconds each
# Each data set's defaults. fashion-mnist: the claims setting (600 labelled public images = 1%,
# 10 IID clients holding the other 59,400), cut to 3 rounds of 1 local epoch (full: 10 x 5). The
# autoencoder's batch is fixed so that the DP recipe below does not change (and retrain) it.
PROFILES: dict[str, dict[str, Any]] = {
    "fashion-mnist": {
        "public-fraction": 0.01,
        "num-clients": 10,
        "ae-epochs": 30,
        "ae-batch-size": 32,
        "rounds": 3,
        "local-epochs": 1,
    },
    "digits": {"num-clients": 10, "rounds": 3, "local-epochs": 2},
}
# The DP runs' recipe: few DP-SGD steps learn only with a larger batch and step (ranked on the
# public split, never on test data: experiments/quick_profile.py). The bar ignores both keys.
DP_RECIPE: dict[str, dict[str, Any]] = {"fashion-mnist": {"batch-size": 256, "lr": 0.01}}
FULL = {"rounds": 10, "local-epochs": 5}  # the claims sweep's values of the keys the profile cuts
# Per encoder: the claims setting's public autoencoder (it also learns from the public labels) and
# the classifier ScatterNet's literature uses (Tramèr & Boneh 2021: linear on its features).
ENCODER_KEYS: dict[str, dict[str, Any]] = {"public": {"ae-labels": 1.0}, "scatternet": {"latent-classifier": "linear"}}


def profile(dataset: str) -> dict[str, Any]:
    """The compare defaults of ``dataset`` (those of fashion-mnist for a data set without its own)."""
    return dict(PROFILES.get(dataset, PROFILES["fashion-mnist"]))


def what_was_cut(base: dict[str, Any]) -> str:
    """One line naming the keys of ``base`` that differ from the full claims setting, or ''."""
    cut = [f"{k} {base[k]} (full: {v})" for k, v in FULL.items() if k in base and base[k] != v]
    return "cut from the full setting to fit minutes: " + ", ".join(cut) if cut else ""


def compare_spec(
    overrides: dict[str, Any],
    *,
    modes: Sequence[str] = MODES,
    encoders: Sequence[str] | None = None,
    epsilon: float = EPSILON,
    attacks: str = "quick",
    families: Sequence[str] = ATTACKS,
) -> SweepSpec:
    """The compare's sweep (see module docstring); ``attacks`` '' or 'none' runs none.

    ``overrides`` are run keys from the command line; they win over the data set's profile.
    ``encoders`` None: each latent mode's ``PAIRS``; a list: every latent mode with each.
    """
    dataset = str(overrides.get("dataset", "fashion-mnist"))
    base = {"dataset": dataset, **profile(dataset), **overrides}
    for key in ("mode", "encoder", "epsilon", "out-dir"):
        base.pop(key, None)
    dp = {k: [v] for k, v in DP_RECIPE.get(dataset, {}).items() if k not in base}
    budgets: list[tuple[dict[str, list[Any]], float]] = [({}, math.inf)] + (
        [(dp, epsilon)] if math.isfinite(epsilon) else []
    )
    grids: list[dict[str, list[Any]]] = []
    for recipe, eps in budgets:
        if "raw" in modes:
            grids.append({"mode": ["raw"], **recipe, "epsilon": [eps]})
        for encoder in ENCODERS if encoders is None else encoders:
            latent = [m for m in modes if m != "raw" and (encoders is not None or encoder in PAIRS[m])]
            own = {k: [v] for k, v in ENCODER_KEYS.get(encoder, {}).items() if k not in base}
            if latent:
                grids.append({"mode": latent, "encoder": [encoder], **own, **recipe, "epsilon": [eps]})
    chosen = "" if attacks == "none" else attacks
    sweep = {"attacks": chosen, "families": list(families), "description": _description(base, modes, epsilon)}
    return SweepSpec.from_mapping({"sweep": sweep, "base": base, "grid": grids}, source="fedlatent compare")


def _description(base: dict[str, Any], modes: Sequence[str], epsilon: float) -> str:
    budgets = "no DP" + (f" and ε = {epsilon:g}" if math.isfinite(epsilon) else "")
    cut = what_was_cut(base)
    recipe = DP_RECIPE.get(str(base["dataset"]))
    keys = ", ".join(f"{k} {v}" for k, v in (recipe or {}).items())
    dp = f" DP runs use {keys}." if keys and math.isfinite(epsilon) else ""
    return (
        f"fedlatent compare on {base['dataset']}: {', '.join(modes)}, each with {budgets}, beside the public-only "
        f"bar." + (f" {cut[0].upper()}{cut[1:]}." if cut else "") + dp
    )
