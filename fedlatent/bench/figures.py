"""The figures of a sweep (matplotlib PNG), drawn from its summary and point rows alone.

Every figure has one panel per *setting* (the data set, partition, public split and encoder
values that vary in the sweep) and one line per mode; a mode differs from the others by its
marker and line style as well as its shade, so the figures read in grey. Error bars are the
std over seeds. The public-only bar is a dash-dotted line, published anchors are labelled
crosses with their source in the caption (``anchors``). ε = ∞ (no DP) is drawn right of the
largest finite ε.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedlatent.bench.aggregate import _number
from fedlatent.bench.anchors import anchors_for
from fedlatent.bench.sweep import PRIVATE_KEYS

MODES = ("raw", "latent-fedavg", "latent-share")
STYLE = {"raw": ("0.0", "o", "-"), "latent-fedavg": ("0.35", "s", "--"), "latent-share": ("0.6", "^", ":")}
FACETS = ("dataset", "partition", "alpha", "public-fraction", "public-labels", "encoder", "num-clients")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def facets(summary: Sequence[dict[str, Any]], drop: Sequence[str] = ()) -> list[tuple[tuple[str, str], ...]]:
    """The settings to draw a panel each: values of the ``FACETS`` keys that vary (``drop`` excluded)."""
    varying = [
        k for k in FACETS if k not in drop and len({s.get(k) for s in summary if s["mode"] != "public-only"}) > 1
    ]
    seen: dict[tuple[tuple[str, str], ...], None] = {}
    for s in summary:
        if s["mode"] != "public-only":
            seen[tuple((k, str(s.get(k))) for k in varying)] = None
    return list(seen) or [()]


def _matches(s: dict[str, Any], facet: tuple[tuple[str, str], ...]) -> bool:
    # A public-only point ignores the private keys (its partition, encoder... are defaults).
    return all(str(s.get(k)) == v for k, v in facet if not (s["mode"] == "public-only" and k in PRIVATE_KEYS))


def _title(facet: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{k} {v}" for k, v in facet) or "all points"


def _eps_x(eps: float | None, finite: list[float]) -> float:
    top = max(finite) if finite else 8.0
    return 2.0 * top if eps is None or math.isinf(eps) else eps


def _panels(n: int, plt: Any, height: float = 3.3) -> tuple[Any, list[Any]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, height * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def _bar(ax: Any, summary: Sequence[dict[str, Any]], facet: tuple[tuple[str, str], ...]) -> None:
    bars = [s["accuracy_mean"] for s in summary if s["mode"] == "public-only" and _matches(s, facet)]
    if bars and bars[0] is not None:
        ax.axhline(bars[0], color="0.2", linestyle="-.", linewidth=1, label=f"public-only {bars[0]:.3f}")


def accuracy_vs_epsilon(summary: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Accuracy (mean ± std over seeds) against ε per mode, with the public-only bar and anchors."""
    plt = _plt()
    feds = [s for s in summary if s["mode"] in MODES]
    if not feds:
        return None
    panels = facets(summary)
    finite = sorted({e for s in feds if (e := _number(s.get("epsilon"))) is not None and math.isfinite(e)})
    fig, axes = _panels(len(panels), plt)
    sources: dict[str, None] = {}
    for ax, facet in zip(axes, panels, strict=True):
        for mode in MODES:
            pts = sorted(
                (_eps_x(_number(s.get("epsilon")), finite), s["accuracy_mean"], s["accuracy_std"] or 0.0)
                for s in feds
                if s["mode"] == mode and _matches(s, facet) and s["accuracy_mean"] is not None
            )
            if pts:
                shade, marker, line = STYLE[mode]
                xs, ys, es = zip(*pts, strict=True)
                ax.errorbar(xs, ys, yerr=es, color=shade, marker=marker, linestyle=line, capsize=3, label=mode)
        _bar(ax, summary, facet)
        dataset = dict(facet).get("dataset") or feds[0].get("dataset", "")
        for a in anchors_for(str(dataset)):
            x = _eps_x(a.epsilon, finite)
            ax.plot([x], [a.accuracy], marker="x", color="0.0", markersize=7, linestyle="none")
            ax.annotate(a.label, (x, a.accuracy), fontsize=6, xytext=(3, 2), textcoords="offset points")
            sources[a.source] = None
        ax.set_xscale("log")
        ticks = [*finite, _eps_x(None, finite)]
        ax.set_xticks(ticks, [f"{t:g}" for t in finite] + ["∞"])
        ax.minorticks_off()
        ax.set_xlabel("ε per client (δ = 1e-5)")
        ax.set_ylabel("test accuracy")
        ax.set_title(_title(facet), fontsize=9)
        ax.legend(fontsize=7)
    if sources:  # wrapped to the figure's width, below the panels
        import textwrap

        width = int(fig.get_figwidth() * 22)
        caption = textwrap.fill("×: published, centralized. " + "; ".join(sources), width=width)
        fig.text(0.01, 0.005, caption, fontsize=6, va="bottom")
        return _save(fig, path, plt, bottom=0.04 + 0.03 * caption.count("\n"))
    return _save(fig, path, plt)


def lift_vs_public_fraction(summary: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Lift over public-only (points) against the public fraction, per mode, one panel per ε."""
    plt = _plt()
    feds = [s for s in summary if s["mode"] in MODES and s.get("lift_mean") is not None]
    if len({s.get("public-fraction") for s in feds}) < 2:
        return None
    eps_values = sorted({_number(s.get("epsilon")) or math.inf for s in feds})
    panels = [(e, f) for e in eps_values for f in facets(feds, drop=("public-fraction",))]
    fig, axes = _panels(len(panels), plt)
    for ax, (eps, facet) in zip(axes, panels, strict=True):
        for mode in MODES:
            pts = sorted(
                (float(s["public-fraction"]), 100 * s["lift_mean"], 100 * (s["lift_std"] or 0.0))
                for s in feds
                if s["mode"] == mode and (_number(s.get("epsilon")) or math.inf) == eps and _matches(s, facet)
            )
            if pts:
                shade, marker, line = STYLE[mode]
                xs, ys, es = zip(*pts, strict=True)
                ax.errorbar(xs, ys, yerr=es, color=shade, marker=marker, linestyle=line, capsize=3, label=mode)
        ax.axhline(0, color="0.2", linestyle="-.", linewidth=1, label="public-only (lift 0)")
        ax.set_xscale("log")
        ax.set_xlabel("public fraction of the training data")
        ax.set_ylabel("lift over public-only (points)")
        ax.set_title(f"ε = {eps:g}" + (f", {_title(facet)}" if facet else ""), fontsize=9)
        ax.legend(fontsize=7)
    return _save(fig, path, plt)


def leakage_vs_epsilon(summary: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Inversion SSIM beyond the best trivial baseline, and MIA AUC, against ε per mode."""
    plt = _plt()
    feds = [s for s in summary if s["mode"] in MODES]
    metrics = [m for m in ("inversion_leakage_ssim", "mia_auc") if any(s.get(f"{m}_mean") is not None for s in feds)]
    if not metrics:
        return None
    panels = facets(summary)
    finite = sorted({e for s in feds if (e := _number(s.get("epsilon"))) is not None and math.isfinite(e)})
    fig, axes = _panels(len(panels) * len(metrics), plt)
    for i, (metric, facet) in enumerate((m, f) for m in metrics for f in panels):
        ax = axes[i]
        for mode in MODES:
            pts = sorted(
                (_eps_x(_number(s.get("epsilon")), finite), s[f"{metric}_mean"], s[f"{metric}_std"] or 0.0)
                for s in feds
                if s["mode"] == mode and _matches(s, facet) and s.get(f"{metric}_mean") is not None
            )
            if pts:
                shade, marker, line = STYLE[mode]
                xs, ys, es = zip(*pts, strict=True)
                ax.errorbar(xs, ys, yerr=es, color=shade, marker=marker, linestyle=line, capsize=3, label=mode)
        ax.axhline(0.0 if metric == "inversion_leakage_ssim" else 0.5, color="0.2", linestyle="-.", linewidth=1)
        ax.set_xscale("log")
        ax.set_xticks([*finite, _eps_x(None, finite)], [f"{t:g}" for t in finite] + ["∞"])
        ax.minorticks_off()
        ax.set_xlabel("ε per client")
        ax.set_ylabel("SSIM beyond trivial baseline" if metric == "inversion_leakage_ssim" else "membership AUC")
        ax.set_title(_title(facet), fontsize=9)
        ax.legend(fontsize=7)
    return _save(fig, path, plt)


def frontier(summary: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Accuracy against inversion leakage beyond baselines: each point one (mode, ε), labelled by ε."""
    plt = _plt()
    feds = [s for s in summary if s["mode"] in MODES and s.get("inversion_leakage_ssim_mean") is not None]
    if not feds:
        return None
    panels = facets(summary)
    fig, axes = _panels(len(panels), plt)
    for ax, facet in zip(axes, panels, strict=True):
        for mode in MODES:
            pts = [s for s in feds if s["mode"] == mode and _matches(s, facet)]
            if pts:
                shade, marker, _ = STYLE[mode]
                xs = [s["inversion_leakage_ssim_mean"] for s in pts]
                ax.scatter(xs, [s["accuracy_mean"] for s in pts], color=shade, marker=marker, label=mode, zorder=3)
                for s, x in zip(pts, xs, strict=True):
                    eps = _number(s.get("epsilon"))
                    label = "∞" if eps is None or math.isinf(eps) else f"{eps:g}"
                    ax.annotate(
                        f"ε={label}", (x, s["accuracy_mean"]), fontsize=6, xytext=(3, 2), textcoords="offset points"
                    )
        _bar(ax, summary, facet)
        ax.axvline(0.0, color="0.5", linewidth=0.8)
        ax.set_xlabel("inversion SSIM beyond trivial baseline (leakage)")
        ax.set_ylabel("test accuracy")
        ax.set_title(_title(facet), fontsize=9)
        ax.legend(fontsize=7)
    return _save(fig, path, plt)


def accuracy_per_round(rows: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Test accuracy after each round, averaged over seeds, per mode; one panel per (ε, setting)."""
    plt = _plt()
    feds = [r for r in rows if r.get("mode") in MODES and r.get("history")]
    if not feds:
        return None
    curves: dict[tuple[float, str, str], list[list[float]]] = {}
    for r in feds:
        accs = [h["accuracy"] for h in json.loads(r["history"]) if h.get("accuracy") is not None]
        facet = _title(tuple((k, str(r.get(f"config.{k}"))) for k in ("partition", "public-fraction", "public-labels")))
        eps = _number(r.get("config.epsilon")) or math.inf
        curves.setdefault((eps, facet, r["mode"]), []).append(accs)
    panels = sorted({(e, f) for e, f, _ in curves})
    fig, axes = _panels(len(panels), plt, height=3.0)
    for ax, (eps, facet) in zip(axes, panels, strict=True):
        for mode in MODES:
            runs = curves.get((eps, facet, mode))
            if runs:
                n = min(len(a) for a in runs)
                mean = [sum(a[i] for a in runs) / len(runs) for i in range(n)]
                shade, marker, line = STYLE[mode]
                ax.plot(range(1, n + 1), mean, color=shade, marker=marker, linestyle=line, label=mode, markersize=4)
        ax.set_xlabel("round")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"ε = {eps:g}; {facet}", fontsize=8)
        ax.legend(fontsize=7)
    return _save(fig, path, plt)


def _save(fig: Any, path: Path, plt: Any, *, bottom: float = 0.03) -> Path:
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_all(out: Path, rows: Sequence[dict[str, Any]], summary: Sequence[dict[str, Any]]) -> list[Path]:
    """Every figure that the sweep's data allow, into ``out/figures``; returns the files written."""
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    drawn = [
        accuracy_vs_epsilon(summary, figures / "accuracy-vs-epsilon.png"),
        lift_vs_public_fraction(summary, figures / "lift-vs-public-fraction.png"),
        leakage_vs_epsilon(summary, figures / "leakage-vs-epsilon.png"),
        frontier(summary, figures / "frontier.png"),
        accuracy_per_round(rows, figures / "accuracy-per-round.png"),
    ]
    return [p for p in drawn if p is not None]
