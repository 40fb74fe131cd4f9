"""``fedlatent attack RUN_DIR``: every attack on one run, scored, written and plotted.

The runner is the only place where the two sides meet: attacks get the ``AttackerView``
(server view + public split), and only afterwards are their outputs scored against
``Truth`` (the private records). Results go to ``RUN_DIR/attacks.json`` (every score with the
attack's settings and wall time; ``not-applicable`` with the reason where an attack has
nothing to work on, e.g. latent inversion without shared latents) and PNG grids of
originals beside reconstructions under ``RUN_DIR/attacks/``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedlatent import __version__
from fedlatent.attacks.common import NotApplicable
from fedlatent.attacks.gradient import gradient_inversion
from fedlatent.attacks.inversion import latent_inversion
from fedlatent.attacks.membership import loss_attack, shadow_attack
from fedlatent.attacks.metrics import aux_class_means
from fedlatent.attacks.model_inversion import model_inversion
from fedlatent.attacks.plots import plot_grid, plot_roc
from fedlatent.attacks.presets import FAMILIES, PRESETS
from fedlatent.attacks.scoring import (
    Truth,
    candidates,
    load_truth,
    score_gradient_inversion,
    score_inversion,
    score_membership,
    score_model_inversion,
)
from fedlatent.attacks.view import AttackerView, load_attacker_view
from fedlatent.jsonable import jsonable

Out = tuple[dict[str, Any], list[tuple[str, np.ndarray]]]  # scores, grid rows (label, images)


def _latent_inversion(view: AttackerView, truth: Truth, s: dict[str, Any], seed: int) -> Out:
    s = dict(s)
    limit = int(s.pop("max_records", 0))
    total = sum(len(z) for z, _ in view.latents.values())
    if limit and total > limit:
        view, truth = _sampled(view, truth, limit, seed)
    rec = latent_inversion(view, seed=seed, **s)
    scores = score_inversion(rec, truth, view, seed=seed)
    pid = min(rec.images)
    rows = [(f"private p{pid}", truth.client_x[pid][:10]), (f"{rec.method} inversion", rec.images[pid][:10])]
    scored = sum(len(v) for v in rec.images.values())
    return {**scores, "settings": {**rec.settings, "scored_records": scored, "shared_records": total}}, rows


def _sampled(view: AttackerView, truth: Truth, limit: int, seed: int) -> tuple[AttackerView, Truth]:
    """The same share of every partition's released records, seeded, about ``limit`` in all.

    Why: scoring 59,400 reconstructions costs minutes; the mean SSIM of a uniform sample of
    2,000 is within ~0.005 of it. The attack itself is unchanged (it learns from the aux set).
    """
    total = sum(len(z) for z, _ in view.latents.values())
    rng = np.random.default_rng([seed, 11])
    share = limit / total
    keep = {p: np.sort(rng.permutation(len(z))[: max(1, round(len(z) * share))]) for p, (z, _) in view.latents.items()}
    latents = {p: (np.asarray(z)[keep[p]], np.asarray(y)[keep[p]]) for p, (z, y) in view.latents.items()}
    x = {p: truth.client_x[p][keep[p]] for p in keep}
    y = {p: truth.client_y[p][keep[p]] for p in keep}
    return dataclasses.replace(view, latents=latents), Truth(client_x=x, client_y=y, aux_y=truth.aux_y)


def _gradient_inversion(view: AttackerView, truth: Truth, s: dict[str, Any], seed: int) -> Out:
    """Single-step matching and, with ``local_steps``, the multi-step model, chosen honestly.

    With two variants, each attacks the first ``select_uploads`` uploads; the one that leaks more
    there attacks the next ``max_uploads``, and only those are scored (choosing on the scored
    uploads would report the luckier of two draws). The selection's figures are kept.
    """
    s = dict(s)
    select = int(s.pop("select_uploads", 0))
    tries = {"single_step": {**s, "local_steps": 0}}
    if s.get("local_steps"):
        tries["multi_step"] = s
    chosen, first, selection = next(iter(tries)), 0, {}
    if len(tries) > 1:
        if select < 1:
            raise ValueError("gradient inversion with local_steps needs select_uploads >= 1 to choose its variant")
        for name, settings in tries.items():
            out = gradient_inversion(view, seed=seed, **{**settings, "max_uploads": select})
            selection[name] = score_gradient_inversion(out, truth, view, seed=seed)["leakage_ssim"]
        chosen = max(selection, key=lambda k: selection[k] if selection[k] is not None else float("-inf"))
        first = select
    out = gradient_inversion(view, seed=seed, first=first, **tries[chosen])
    scores = score_gradient_inversion(out, truth, view, seed=seed)
    rows = [(f"r{r} p{p}", imgs[:10]) for (r, p), imgs in sorted(out.images.items())[:6]]
    return {**scores, "variant": chosen, "selection": {"uploads": select, "leakage_ssim": selection}}, rows


def _membership(view: AttackerView, truth: Truth, s: dict[str, Any], seed: int) -> Out:
    private = sum(len(v) for v in truth.client_x.values())
    n = min(int(s["candidates"]), 2 * private, 2 * len(view.test_x))
    x, y, is_member = candidates(truth, view, n=n, seed=seed)  # only x, y reach the attacks
    shadow_kw = {k: v for k, v in s.items() if k in ("num_shadows", "epochs")}  # "figure" is not a setting
    raw = {"loss": loss_attack(view, x, y), "shadow": shadow_attack(view, x, y, seed=seed, **shadow_kw)}
    scores = {name: score_membership(v, is_member) for name, v in raw.items()}
    best = max(scores.values(), key=lambda v: v["auc"])
    figure = s.get("figure")
    if figure is not None:
        plot_roc(Path(figure), raw, is_member, title=f"membership inference: {view.cfg.mode} ({view.cfg.dataset})")
    worst = {k: max(v[k] for v in scores.values()) for k in ("tpr_at_0.01_fpr", "tpr_at_0.001_fpr", "fpr_resolution")}
    return {**scores, "auc": best["auc"], **worst, "settings": {"candidates": n, **shadow_kw, "seed": seed}}, []


def _model_inversion(view: AttackerView, truth: Truth, s: dict[str, Any], seed: int) -> Out:
    out = model_inversion(view, seed=seed, **s)
    scores = score_model_inversion(out, truth, view)
    aux = aux_class_means(view.aux_x, view.aux_y, view.num_classes)
    return {**scores, "settings": out.settings}, [("aux class means", aux), ("model inversion", out.images)]


ATTACKS: dict[str, Callable[[AttackerView, Truth, dict[str, Any], int], Out]] = {
    "latent-inversion": _latent_inversion,
    "gradient-inversion": _gradient_inversion,
    "membership": _membership,
    "model-inversion": _model_inversion,
}


def run_attacks(
    run_dir: str | Path,
    *,
    only: Sequence[str] = FAMILIES,
    preset: str = "full",
    seed: int = 0,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the chosen attack families on a finished run; write and return ``attacks.json``."""
    run_dir = Path(run_dir)
    unknown = sorted(set(only) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown attack(s) {', '.join(unknown)}; choose from {', '.join(FAMILIES)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    view = load_attacker_view(run_dir)
    truth = load_truth(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    report: dict[str, Any] = {
        "run": str(run_dir),
        "mode": view.cfg.mode,
        "encoder": view.cfg.encoder if view.cfg.is_latent else None,
        "accuracy": results["accuracy"],
        "epsilon": results["epsilon"],
        "end_to_end_dp": results["end_to_end_dp"],
        "preset": preset,
        "aux_labels": view.aux_labels,
        "seed": seed,
        "fedlatent_version": __version__,
        "attacks": {},
    }
    figures = run_dir / "attacks"
    for i, name in enumerate(f for f in FAMILIES if f in only):
        progress(f"[{i + 1}/{len(only)}] {name} ...")
        start = time.time()
        settings = dict(PRESETS[preset][name])
        if name == "membership":
            settings["figure"] = figures / "membership-roc.png"
            figures.mkdir(exist_ok=True)
        try:
            scores, rows = ATTACKS[name](view, truth, settings, seed)
        except NotApplicable as err:
            report["attacks"][name] = {"status": "not-applicable", "reason": str(err)}
            progress(f"      not applicable: {err}")
            continue
        entry = {"status": "done", "seconds": round(time.time() - start, 2), **scores}
        report["attacks"][name] = entry
        if rows:
            figures.mkdir(exist_ok=True)
            plot_grid(figures / f"{name}.png", rows, title=f"{name}: {view.cfg.mode} ({view.cfg.dataset})")
        progress(f"      {headline(name, entry)}  ({entry['seconds']:.0f} s)")
    (run_dir / "attacks.json").write_text(json.dumps(jsonable(report), indent=2, allow_nan=False) + "\n")
    progress(f"attack results: {run_dir / 'attacks.json'}")
    return report


def headline(name: str, entry: dict[str, Any]) -> str:
    """One line of the scores people look at first."""
    if entry.get("status") != "done":
        return "n/a"
    if name == "membership":
        tpr = f", TPR {100 * entry['tpr_at_0.001_fpr']:.2f}% at 0.1% FPR" if "tpr_at_0.001_fpr" in entry else ""
        if entry.get("fpr_resolution", 0) > 0.001:  # too few non-members to resolve 0.1%: say so
            tpr += f" (FPR resolution {100 * entry['fpr_resolution']:.2g}%: read as TPR at FPR 0)"
        return f"AUC {entry['auc']:.3f} (loss {entry['loss']['auc']:.3f}, shadow {entry['shadow']['auc']:.3f}){tpr}"
    ssim, leak = entry.get("ssim"), entry.get("leakage_ssim")
    if ssim is None:
        return "no image reconstructions"
    text = f"SSIM {ssim:.3f}"
    if leak is not None:
        text += f", beyond the best baseline ({entry.get('leakage_baseline')}) {leak:+.3f}"
        text += _interval(entry.get("leakage_interval")) + f", n {entry.get('leakage_n')}"
    if ind := entry.get("individual"):
        text += f"; {ind['kind']}: vs strangers {ind['individual_ssim']:+.3f}{_interval(ind['individual_interval'])}"
    return text


def _interval(bounds: Sequence[float | None] | None) -> str:
    low, high = bounds or (None, None)
    return "" if low is None or high is None else f" [{low:+.3f}, {high:+.3f}]"
