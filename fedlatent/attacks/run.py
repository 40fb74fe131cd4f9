"""``fedlatent attack RUN_DIR``: every attack on one run, scored, written and plotted.

The runner is the only place where the two sides meet: attacks get the ``AttackerView``
(server view + public split), and only afterwards are their outputs scored against
``Truth`` (the private records). Results go to ``RUN_DIR/attacks.json`` (every score with the
attack's settings and wall time; ``not-applicable`` with the reason where an attack has
nothing to work on, e.g. latent inversion without shared latents) and PNG grids of
originals beside reconstructions under ``RUN_DIR/attacks/``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .gradient import gradient_inversion
from .inversion import NotApplicable, latent_inversion
from .membership import loss_attack, shadow_attack
from .model_inversion import model_inversion
from .names import FAMILIES
from .scoring import candidates, score_gradient_inversion, score_inversion, score_membership, score_model_inversion
from .view import AttackerView, Truth, load_attacker_view, load_truth

# Attack effort: "full" is the default; "quick" is for smoke tests only.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "latent-inversion": {"epochs": 100, "shadow_epochs": 50},
        "gradient-inversion": {"max_uploads": 3, "num_inputs": 1, "steps": 300},
        "membership": {"candidates": 2000, "num_shadows": 4},
        "model-inversion": {"steps": 300, "inverse_epochs": 100},
    },
    # ~5x less training of the inverse/shadow networks than "full": for 2-core machines.
    "standard": {
        "latent-inversion": {"epochs": 20, "shadow_epochs": 10, "noise_draws": 2},
        "gradient-inversion": {"max_uploads": 3, "num_inputs": 1, "steps": 300, "inverse_epochs": 20},
        "membership": {"candidates": 2000, "num_shadows": 4},
        "model-inversion": {"steps": 300, "inverse_epochs": 20, "shadow_epochs": 10},
    },
    "quick": {
        "latent-inversion": {"epochs": 15, "shadow_epochs": 5, "noise_draws": 1},
        "gradient-inversion": {"max_uploads": 1, "num_inputs": 1, "steps": 40, "inverse_epochs": 10},
        "membership": {"candidates": 200, "num_shadows": 2, "epochs": 3},
        "model-inversion": {"steps": 40, "inverse_epochs": 10},
    },
}

Out = tuple[dict[str, Any], list[tuple[str, np.ndarray]]]  # scores, grid rows (label, images)


def _latent_inversion(view: AttackerView, truth: Truth, s: dict[str, Any], seed: int) -> Out:
    rec = latent_inversion(view, seed=seed, **s)
    scores = score_inversion(rec, truth, view, seed=seed)
    pid = min(rec.images)
    rows = [(f"private p{pid}", truth.client_x[pid][:10]), (f"{rec.method} inversion", rec.images[pid][:10])]
    return {**scores, "settings": rec.settings}, rows


def _gradient_inversion(view: AttackerView, truth: Truth, s: dict[str, Any], seed: int) -> Out:
    out = gradient_inversion(view, seed=seed, **s)
    scores = score_gradient_inversion(out, truth, view)
    rows = [(f"r{r} p{p}", imgs[:10]) for (r, p), imgs in sorted(out.images.items())]
    return {**scores, "settings": out.settings}, rows


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
    return {**scores, "auc": best["auc"], "settings": {"candidates": n, **shadow_kw, "seed": seed}}, []


def _model_inversion(view: AttackerView, truth: Truth, s: dict[str, Any], seed: int) -> Out:
    out = model_inversion(view, seed=seed, **s)
    scores = score_model_inversion(out, truth, view)
    aux = np.stack([view.aux_x[view.aux_y == c].mean(0) for c in range(view.num_classes)])
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
    (run_dir / "attacks.json").write_text(json.dumps(_finite(report), indent=2) + "\n")
    progress(f"attack results: {run_dir / 'attacks.json'}")
    return report


def headline(name: str, entry: dict[str, Any]) -> str:
    """One line of the scores people look at first."""
    if entry.get("status") != "done":
        return "n/a"
    if name == "membership":
        return f"AUC {entry['auc']:.3f} (loss {entry['loss']['auc']:.3f}, shadow {entry['shadow']['auc']:.3f})"
    ssim, leak = entry.get("ssim"), entry.get("leakage_ssim")
    if ssim is None:
        return "no image reconstructions"
    return f"SSIM {ssim:.3f}, beyond the trivial baseline {leak:+.3f}" if leak is not None else f"SSIM {ssim:.3f}"


def _finite(value: Any) -> Any:
    """Strict JSON: NaN/inf become strings, numpy scalars plain numbers, int keys strings."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def plot_grid(path: Path, rows: list[tuple[str, np.ndarray]], *, title: str) -> None:
    """Rows of images (label, (n, C, H, W) in [0, 1]) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.1 * cols + 1.4, 1.2 * len(rows) + 0.5), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(np.clip(images[c][0], 0, 1), cmap="gray", vmin=0, vmax=1)
        axes[r][0].set_title(label, fontsize=8, loc="left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_roc(path: Path, scores: dict[str, np.ndarray], is_member: np.ndarray, *, title: str) -> None:
    """ROC curves of membership scores on log-log axes (the low-FPR region is what matters)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(4.2, 4))
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(is_member.astype(int), s)
        ax.plot(np.maximum(fpr, 1e-4), np.maximum(tpr, 1e-4), label=name)
    ax.plot([1e-4, 1], [1e-4, 1], "k--", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
