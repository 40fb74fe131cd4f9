"""The performance benchmark's tables (Markdown) and figure (PNG) from its ``bench.json`` mapping."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedlatent.bench import ray_bench, secure, steps


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _fed_vs_central(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["mode", "ε", "federated s", "central s", "ratio", "fed acc", "central acc", "MB up / client"]
    return header, [
        [r["mode"], "∞" if r["epsilon"] is None else f"{r['epsilon']:g}", f"{r['federated_seconds']:.1f}",
         f"{r['central_seconds']:.1f}", f"**{r['ratio']:.2f}**", f"{r['federated_accuracy']:.4f}",
         f"{r['central_accuracy']:.4f}", f"{r['bytes_uploaded_per_client'] / 1e6:.2f}"]
        for r in rows
    ]  # fmt: skip


def _rounds(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["mode", "clients", "s / round", "peak GiB (all processes)", "MB up / client"]
    return header, [
        [r["mode"], str(r["clients"]), f"{r['seconds_per_round']:.1f}", _gib(r["peak_rss_bytes"]),
         f"{r['bytes_uploaded_per_client'] / 1e6:.2f}"]
        for r in rows
    ]  # fmt: skip


def _scale(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["data set", "clients", "round s", "ms / message", "marginal ms / message", "run s", "peak GiB",
              "kB up / client"]  # fmt: skip
    return header, [
        [r["dataset"], str(r["clients"]), f"{r['round_seconds']:.1f}", f"{r['seconds_per_message'] * 1e3:.1f}",
         f"{r['marginal_seconds_per_message'] * 1e3:.1f}" if "marginal_seconds_per_message" in r else "-",
         f"{r['wall_seconds']:.1f}", _gib(r["peak_rss_bytes"]), f"{r['bytes_uploaded_per_client'] / 1e3:.1f}"]
        for r in rows
    ]  # fmt: skip


def _recipe(r: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    return ["ε", "rounds", "accuracy", "run s"], [
        [f"{r['epsilon']:.3f}", str(r["rounds"]), f"{r['accuracy']:.4f}", f"{r['wall_seconds']:.1f}"]
    ]


# Each part of bench.json that has a table: its title and its (header, rows).
SECTIONS: dict[str, tuple[str, Callable[[Any], tuple[list[str], list[list[str]]]]]] = {
    "dp_step": ("A DP-SGD step ÷ a plain step (medians of interleaved repetitions; the method used in bold)",
                steps.markdown_rows),
    "recipe": ("The fair raw DP baseline (Tramèr & Boneh's recipe per client; Fashion-MNIST, 1% public, 10 clients)",
               _recipe),
    "ray_sweep": ("A sweep's points on a local Ray cluster (`fedlatent sweep --ray`)", ray_bench.markdown_rows),
    "fed_vs_central": ("Federated ÷ centralized (same model, data and epochs)", _fed_vs_central),
    "rounds": ("Rounds at 100 clients, a tenth sampled per round", _rounds),
    "secagg": ("SecAgg+ (distributed DP) beside plain FedAvg, same model and data", secure.markdown_rows),
    "scale": ("latent-share as clients grow (one release round)", _scale),
}  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    """Every table of the benchmark parts that ran, in Markdown."""
    lines = [f"# fedlatent bench ({report['dataset']}, {report['started']})"]
    for key, (title, table) in SECTIONS.items():
        if report.get(key):
            lines += ["", f"## {title}", "", *_table(*table(report[key]))]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path) -> None:
    """``bench.md``; ``bench.png`` (latent-share's cost as clients grow) and ``dp-step.png`` where those ran."""
    (out / "bench.md").write_text(markdown(report))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if report.get("scale"):
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
    if report.get("dp_step"):
        rows = report["dp_step"]
        methods = [m for m in rows[0]["ratio"] if m != "noise"]
        fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(rows)), 3.4))
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(rows))]
            ax.bar(xs, [r["ratio"][method] for r in rows], width, label=method)
        ax.scatter(range(len(rows)), [1 + r["ratio"]["noise"] for r in rows], marker="_", s=300, color="k",
                   label="floor: plain + noise", zorder=3)  # fmt: skip
        ax.set_xticks(range(len(rows)), [f"{r['model']}\n{r['batch']}" for r in rows], fontsize=7)
        ax.set_yscale("log")
        ax.axhline(1.5, color="grey", lw=0.8, ls="--")
        ax.set_ylabel("DP step ÷ plain step")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "dp-step.png", dpi=120)
        plt.close(fig)
