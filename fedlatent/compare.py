"""Side-by-side summary of several runs: a terminal table, ``compare.json/.csv`` and a PNG."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

COLUMNS = (
    "mode",
    "encoder",
    "dataset",
    "accuracy",
    "epsilon",
    "end_to_end_dp",
    "bytes_uploaded",
    "bytes_downloaded",
    "wall_seconds",
)


def rows_of(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The compared fields of each ``results.json``."""
    return [{c: r.get(c) for c in COLUMNS} for r in results]


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}"


def summarize(results: Sequence[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """Print the table and write ``compare.json``, ``compare.csv`` and ``compare.png``."""
    from rich.console import Console
    from rich.table import Table

    rows = rows_of(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(rows, indent=2) + "\n")
    with (out / "compare.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)

    table = Table(title=f"fedlatent compare ({rows[0]['dataset']})" if rows else "fedlatent compare")
    for name in ("mode", "encoder", "accuracy", "epsilon", "end-to-end DP", "MB up", "MB down", "seconds"):
        table.add_column(name, justify="left" if name in ("mode", "encoder") else "right")
    for r in rows:
        eps = "∞" if r["epsilon"] is None else f"{r['epsilon']:.3f}"
        table.add_row(
            r["mode"],
            r["encoder"] or "-",
            f"{r['accuracy']:.4f}",
            eps,
            str(r["end_to_end_dp"]).lower(),
            _mb(r["bytes_uploaded"]),
            _mb(r["bytes_downloaded"]),
            f"{r['wall_seconds']:.1f}",
        )
    Console(width=max(Console().width, 110)).print(table)
    _plot(rows, out / "compare.png")
    print(f"results: {out}/compare.json, compare.csv, compare.png")
    return rows


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_mb) = plt.subplots(1, 2, figsize=(8, 3.2))
    labels = [r["mode"] for r in rows]
    ax_acc.bar(labels, [r["accuracy"] for r in rows], color="tab:blue")
    ax_acc.set_ylabel("test accuracy")
    ax_acc.set_ylim(0, 1)
    ax_mb.bar(labels, [r["bytes_uploaded"] / 1e6 for r in rows], color="tab:orange")
    ax_mb.set_ylabel("MB uploaded by clients")
    for ax in (ax_acc, ax_mb):
        ax.tick_params(axis="x", labelrotation=15)
    encoder = next((r["encoder"] for r in rows if r["encoder"]), "-")
    fig.suptitle(f"{rows[0]['dataset']}, encoder {encoder}" if rows else "")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
