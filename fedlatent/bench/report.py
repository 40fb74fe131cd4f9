"""The performance benchmark's tables (Markdown) and figure (PNG) from its ``bench.json`` mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedlatent.bench.secure import markdown_rows


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(report: dict[str, Any]) -> str:
    """Every table of the benchmark, in Markdown."""
    step = report["dp_step"]
    lines = [
        f"# fedlatent bench ({report['dataset']}, {report['started']})",
        "",
        f"A DP-SGD step (ghost clipping) costs **{step['dp_over_plain']:.2f}** plain steps "
        f"({step['dp_step_seconds'] * 1e3:.1f} ms vs {step['plain_step_seconds'] * 1e3:.1f} ms).",
        "",
        "## Federated ÷ centralized (same model, data and epochs)",
        "",
    ]
    lines += _table(
        ["mode", "ε", "federated s", "central s", "ratio", "fed acc", "central acc", "MB up / client"],
        [
            [
                r["mode"], "∞" if r["epsilon"] is None else f"{r['epsilon']:g}", f"{r['federated_seconds']:.1f}",
                f"{r['central_seconds']:.1f}", f"**{r['ratio']:.2f}**", f"{r['federated_accuracy']:.4f}",
                f"{r['central_accuracy']:.4f}", f"{r['bytes_uploaded_per_client'] / 1e6:.2f}",
            ]
            for r in report["fed_vs_central"]
        ],
    )  # fmt: skip
    lines += ["", "## Rounds at 100 clients, a tenth sampled per round", ""]
    lines += _table(
        ["mode", "clients", "s / round", "peak GiB (all processes)", "MB up / client"],
        [
            [r["mode"], str(r["clients"]), f"{r['seconds_per_round']:.1f}", _gib(r["peak_rss_bytes"]),
             f"{r['bytes_uploaded_per_client'] / 1e6:.2f}"]
            for r in report["rounds"]
        ],
    )  # fmt: skip
    if report.get("secagg"):
        lines += ["", "## SecAgg+ (distributed DP) beside plain FedAvg, same model and data", ""]
        lines += _table(*markdown_rows(report["secagg"]))
    lines += ["", "## latent-share as clients grow (one release round)", ""]
    lines += _table(
        ["data set", "clients", "round s", "ms / message", "marginal ms / message", "run s", "peak GiB",
         "kB up / client"],
        [
            [r["dataset"], str(r["clients"]), f"{r['round_seconds']:.1f}", f"{r['seconds_per_message'] * 1e3:.1f}",
             f"{r['marginal_seconds_per_message'] * 1e3:.1f}" if "marginal_seconds_per_message" in r else "-",
             f"{r['wall_seconds']:.1f}", _gib(r["peak_rss_bytes"]), f"{r['bytes_uploaded_per_client'] / 1e3:.1f}"]
            for r in report["scale"]
        ],
    )  # fmt: skip
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path) -> None:
    """``bench.md`` and ``bench.png`` (per-message cost and round time as clients grow)."""
    (out / "bench.md").write_text(markdown(report))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_msg, ax_mem) = plt.subplots(1, 2, figsize=(8.5, 3.4))
    for dataset, marker in (("digits", "o"), ("fashion-mnist", "s")):
        rows = [r for r in report["scale"] if r["dataset"] == dataset]
        if rows:
            xs = [r["clients"] for r in rows]
            ax_msg.plot(xs, [r["seconds_per_message"] * 1e3 for r in rows], marker=marker, color="k", label=dataset)
            ax_mem.plot(xs, [r["peak_rss_bytes"] / 2**30 for r in rows], marker=marker, color="k", label=dataset)
    for ax, label in ((ax_msg, "ms per client message"), (ax_mem, "peak resident GiB (all processes)")):
        ax.set_xscale("log")
        ax.set_xlabel("clients (latent-share)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "bench.png", dpi=120)
    plt.close(fig)
