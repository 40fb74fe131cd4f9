"""Side-by-side summary of several runs: a terminal table, ``compare.json/.csv`` and a PNG.

With DP runs (``fedlatent compare --epsilon E``) each mode gets its DP accuracy, the ε its
clients really spent and whether the guarantee holds end to end, beside the non-private run.
With the public-only bar (``baselines.public_only``) every accuracy shows its ``lift``
over it, in points: a federation is worth its privacy cost only by that lift.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedlatent.bench.attack_columns import INVERSION_DETAIL, attack_columns

COLUMNS = (
    "mode",
    "encoder",
    "dataset",
    "target_epsilon",
    "accuracy",
    "lift",
    "epsilon",
    "epsilon_local",  # distributed DP: what a client's own share guarantees if SecAgg is broken
    "end_to_end_dp",
    "bytes_uploaded",
    "bytes_downloaded",
    "wall_seconds",
    "inversion_ssim",
    "inversion_leakage_ssim",
    *INVERSION_DETAIL,
    "mia_auc",
    "mia_tpr_at_0.001_fpr",
)


def rows_of(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The compared fields of each ``results.json`` (``target_epsilon``: the configured budget)."""
    rows = []
    for r in results:
        row = {c: r.get(c) for c in COLUMNS}
        target = r.get("config", {}).get("epsilon", "inf")
        row["target_epsilon"] = None if target == "inf" else float(target)
        row.update(attack_columns(Path(r.get("config", {}).get("out-dir", "")) / "attacks.json"))
        rows.append(row)
    return rows


def pairs(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any] | None, dict[str, Any] | None]]:
    """(non-private, DP) rows of each mode, in first-seen order."""
    out: dict[tuple[str, str | None], list[dict[str, Any] | None]] = {}
    for r in rows:
        slot = out.setdefault((r["mode"], r["encoder"]), [None, None])
        slot[0 if r["target_epsilon"] is None else 1] = r
    return [(a, b) for a, b in out.values()]


def _score(row: dict[str, Any] | None, key: str, *, signed: bool = False) -> str:
    value = None if row is None else row.get(key)
    return "-" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")


def _leak(row: dict[str, Any] | None) -> str:
    """Leakage beyond the best baseline, and whether the stranger test found it individual."""
    text = _score(row, "inversion_leakage_ssim", signed=True)
    kind = None if row is None else row.get("leak_kind")
    return text if kind is None else f"{text} {kind}"


def _mia(row: dict[str, Any] | None) -> str:
    tpr = None if row is None else row.get("mia_tpr_at_0.001_fpr")
    return _score(row, "mia_auc") + ("" if tpr is None else f", {100 * tpr:.1f}%")


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}"


def _acc(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    lift = "" if r.get("lift") is None else f" ({100 * r['lift']:+.1f})"
    return f"{r['accuracy']:.4f}{lift}"


def summarize(
    results: Sequence[dict[str, Any]], out: Path, *, baseline: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Print the table and write ``compare.json``, ``compare.csv`` and ``compare.png``.

    ``baseline`` is the public-only bar of the runs' public split (``public_only``): it gets a
    row of its own and every run its ``lift`` = accuracy − bar.
    """
    from rich.console import Console
    from rich.table import Table

    rows = rows_of(results)
    bar = None if baseline is None else float(baseline["accuracy"])
    for r in rows:
        r["lift"] = None if bar is None else r["accuracy"] - bar
    written = rows + ([_baseline_row(baseline, rows)] if baseline is not None else [])
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(written, indent=2) + "\n")
    with (out / "compare.csv").open("w", newline="") as f:
        extra = ("image_classifier", "latent_classifier", "scatter_classifier") if bar else ()
        writer = csv.DictWriter(f, fieldnames=[*COLUMNS, *extra])
        writer.writeheader()
        writer.writerows(written)

    grouped = pairs(rows)
    targets = sorted({r["target_epsilon"] for r in rows if r["target_epsilon"] is not None})
    dp_name = f"accuracy ε={','.join(f'{t:g}' for t in targets)}" if targets else None
    table = Table(title=f"fedlatent compare ({rows[0]['dataset']})" if rows else "fedlatent compare")
    attacked = any(r["mia_auc"] is not None or r["inversion_ssim"] is not None for r in rows)
    acc_name = "accuracy (lift)" if bar is not None else "accuracy"
    names = ["mode", "encoder", acc_name, *([dp_name, "ε spent"] if dp_name else []), "end-to-end DP"]
    if attacked:
        both = " no DP / DP" if dp_name else ""
        names += [f"inversion leak{both}", f"MIA AUC, TPR@0.1%FPR{both}"]
    for name in [*names, "MB up", "MB down", "seconds"]:
        table.add_column(name, justify="left" if name in ("mode", "encoder") else "right", no_wrap=True)
    if baseline is not None:
        cells = ["public-only", "-", f"{bar:.4f}", *(["-", "0.000"] if dp_name else []), "true"]
        table.add_row(*cells, *(["-", "-"] if attacked else []), "0.00", "0.00", f"{baseline['wall_seconds']:.1f}")
    for plain, dp in grouped:
        first = plain or dp
        assert first is not None
        cells = [first["mode"], "-" if first["mode"] == "raw" else (first["encoder"] or "-"), _acc(plain)]
        if dp_name:
            eps = "-" if dp is None or dp["epsilon"] is None else f"{dp['epsilon']:.3f}"
            if dp is not None and dp.get("epsilon_local") is not None:  # distributed DP: the SecAgg-broken figure
                eps += f" ({dp['epsilon_local']:.3g} local)"
            cells += [_acc(dp), eps]
        main = dp or first  # the privacy claim (and attacks) of the DP run when there is one
        runs = [r for r in (plain, dp) if r is not None]
        cells.append(str(main["end_to_end_dp"]).lower())
        if attacked:  # leakage = SSIM beyond the best trivial baseline, and its kind; both runs of the mode
            sides = (plain, dp) if dp_name else (main,)
            cells.append(" / ".join(_leak(r) for r in sides))
            cells.append(" / ".join(_mia(r) for r in sides))
        cells += [
            _mb(first["bytes_uploaded"]),
            _mb(first["bytes_downloaded"]),
            f"{sum(r['wall_seconds'] for r in runs):.1f}",
        ]
        table.add_row(*cells)
    Console(width=max(Console().width, 220)).print(table)  # one line per mode, also in a log file
    _plot(grouped, out / "compare.png", dp_name, bar)
    print(f"results: {out}/compare.json, compare.csv, compare.png")
    return rows


def _baseline_row(baseline: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The public-only bar as a row: no client, no private record touched (ε = 0)."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(mode="public-only", accuracy=baseline["accuracy"], lift=0.0, epsilon=0.0, end_to_end_dp=True)
    row.update(dataset=rows[0]["dataset"] if rows else None, bytes_uploaded=0, bytes_downloaded=0)
    row.update(wall_seconds=baseline["wall_seconds"], image_classifier=baseline["image_classifier"])
    row["latent_classifier"] = baseline["latent_classifier"]
    row["scatter_classifier"] = baseline.get("scatter_classifier")
    return row


def _label(r: dict[str, Any]) -> str:
    return str(r.get("mode", "?")) if r.get("mode") == "raw" else f"{r.get('mode')}\n{r.get('encoder')}"


def show_compare(out: Path) -> list[str]:
    """The compare directory ``out`` (a sweep) as the table, its answer and the report's path; returns the answer."""
    from fedlatent.bench.aggregate import point_rows
    from fedlatent.bench.answer import answer
    from fedlatent.bench.compare_spec import what_was_cut

    sweep = json.loads((out / "sweep.json").read_text())
    results, bars = [], []
    for p in sweep["points"]:
        where = out / "points" / p["id"]
        if not (where / "point.json").is_file():
            continue
        r = json.loads((where / "results.json").read_text())
        if r["mode"] == "public-only":
            bars.append({**(r.get("public_only") or {}), "accuracy": r["accuracy"], "wall_seconds": r["wall_seconds"]})
        else:
            results.append(r)
    baseline = max(bars, key=lambda b: b["accuracy"]) if bars else None  # the strongest bar, if several
    summarize(results, out, baseline=baseline)
    sentences = answer(point_rows(out))
    cut = what_was_cut(sweep["spec"]["base"])
    print("\n" + "\n".join([*sentences, *([cut[0].upper() + cut[1:] + "."] if cut else [])]))
    print(f"report with figures: {out / 'report.html'}")
    return sentences


def _plot(
    grouped: list[tuple[dict[str, Any] | None, dict[str, Any] | None]],
    path: Path,
    dp_name: str | None,
    bar: float | None,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax_acc, ax_mb) = plt.subplots(1, 2, figsize=(8.5, 3.4))
    labels = [_label(a or b or {}) for a, b in grouped]
    pos = np.arange(len(grouped))
    width = 0.38 if dp_name else 0.7
    ax_acc.bar(
        pos - (width / 2 if dp_name else 0), [a["accuracy"] if a else 0 for a, _ in grouped], width, label="no DP"
    )
    if dp_name:
        ax_acc.bar(pos + width / 2, [b["accuracy"] if b else 0 for _, b in grouped], width, label=dp_name[9:])
        ax_acc.legend(fontsize=8)
    if bar is not None:
        ax_acc.axhline(bar, color="k", linestyle="--", linewidth=1, label="public-only")
        ax_acc.legend(fontsize=8)
    ax_acc.set_ylabel("test accuracy")
    ax_acc.set_ylim(0, 1)
    ax_mb.bar(pos, [(a or b or {}).get("bytes_uploaded", 0) / 1e6 for a, b in grouped], 0.7, color="tab:orange")
    ax_mb.set_ylabel("MB uploaded by clients")
    for ax in (ax_acc, ax_mb):
        ax.set_xticks(pos, labels, rotation=15)
    first = next((a or b for a, b in grouped if a or b), None)
    encoder = next(((a or b or {}).get("encoder") for a, b in grouped if (a or b or {}).get("encoder")), "-")
    fig.suptitle(f"{first['dataset']}, encoder {encoder}" if first else "")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
