"""A sweep's results as tables: one row per point, and a summary with mean ± std over seeds.

What: ``point_rows(out)`` reads every finished point of ``out/sweep.json`` and flattens its
``results.json`` and ``attacks.json`` (nested keys joined by dots, lists kept as JSON text) into
one row, adding ``bar`` (the accuracy of the point's public-only point, same public split and
seed), ``lift`` = accuracy − bar, and the headline leakage columns of ``compare``
(``inversion_leakage_ssim``: the best inversion's SSIM beyond its best trivial baseline;
``mia_auc``). ``summarize(rows)`` groups the rows by every run key but ``seed`` and gives each
metric's mean, sample std (None for one seed) and count. ``write_tables`` writes
``points.csv/.json`` and ``summary.csv/.json``.

Why one flat row per point: a CSV any tool reads, and every figure and the report are drawn
from these rows alone, never from a second reading of the run directories.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedlatent.bench.attack_columns import attack_columns

METRICS: tuple[str, ...] = ("accuracy", "lift", "bar", "epsilon", "epsilon_local", "inversion_ssim")
METRICS += ("inversion_leakage_ssim", "individual_leakage_ssim")
METRICS += ("mia_auc", "mia_tpr_at_0.001_fpr", "wall_seconds", "bytes_uploaded")
GROUP_IGNORES = ("seed", "out-dir", "cache-dir", "client-state-dir", "resume", "overwrite")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys; lists as JSON text (one CSV cell)."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for k, v in value.items():
            flat |= flatten(v, f"{prefix}{k}.")
        return flat
    if isinstance(value, list):
        return {prefix[:-1]: json.dumps(value)}
    return {prefix[:-1]: value}


def _number(v: Any) -> float | None:
    """A metric as a float: None, "nan" and non-numbers are missing; "inf" stays infinite."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def point_rows(out: Path) -> list[dict[str, Any]]:
    """One flat row per finished point of the sweep in ``out`` (see module docstring)."""
    sweep = json.loads((out / "sweep.json").read_text())
    loaded = {}
    for p in sweep["points"]:
        base = out / "points" / p["id"]
        if (base / "point.json").is_file():
            loaded[p["id"]] = (p, json.loads((base / "results.json").read_text()), _json(base / "attacks.json"))
    rows = []
    for pid, (p, results, attacks) in loaded.items():
        bar = loaded.get(p["public_only"])
        row: dict[str, Any] = {"point": pid, "public_only_point": p["public_only"]}
        row["target_epsilon"] = _number(results["config"].get("epsilon"))
        row |= flatten(results)
        row |= flatten(_attack_fields(attacks or {}), "attacks.")
        row |= attack_columns(base_dir(out, pid) / "attacks.json")
        row["bar"] = None if bar is None else bar[1]["accuracy"]
        row["lift"] = None if bar is None else results["accuracy"] - bar[1]["accuracy"]
        rows.append(row)
    return rows


def _attack_fields(attacks: dict[str, Any]) -> dict[str, Any]:
    """``attacks.json`` less what repeats ``results.json``: its families and its own settings."""
    repeated = ("attacks", "mode", "encoder", "accuracy", "epsilon", "end_to_end_dp")
    return {k: v for k, v in attacks.items() if k not in repeated} | attacks.get("attacks", {})


def base_dir(out: Path, pid: str) -> Path:
    """The run directory of point ``pid``."""
    return out / "points" / pid


def setting(row: dict[str, Any], *, ignore: Sequence[str] = GROUP_IGNORES) -> tuple[tuple[str, str], ...]:
    """The run keys of a row (its ``config.*`` columns) but the ignored ones, as a hashable key."""
    return tuple(
        sorted((k[len("config.") :], str(v)) for k, v in row.items() if k.startswith("config.") and k[7:] not in ignore)
    )


def summarize(rows: Sequence[dict[str, Any]], metrics: Sequence[str] = METRICS) -> list[dict[str, Any]]:
    """Mean, sample std and count of each metric over the rows that differ only in their seed."""
    groups: dict[tuple[tuple[str, str], ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(setting(r), []).append(r)
    out = []
    for key, members in groups.items():
        summary: dict[str, Any] = {k: v for k, v in key}
        summary["seeds"] = sorted(int(r["seed"]) for r in members)
        summary["points"] = [r["point"] for r in members]
        kinds = {r.get("leak_kind") for r in members} - {None}  # "individual" if any seed's stranger test says so
        summary["leak_kind"] = "individual" if "individual" in kinds else (kinds.pop() if kinds else None)
        for m in metrics:
            values = [x for r in members if (x := _number(r.get(m))) is not None]
            summary[f"{m}_mean"] = statistics.fmean(values) if values else None
            summary[f"{m}_std"] = statistics.stdev(values) if len(values) > 1 else None
            summary[f"{m}_n"] = len(values)
        out.append(summary)
    return out


def mean_std(summary: dict[str, Any], metric: str, *, scale: float = 1.0, digits: int = 4) -> str:
    """``mean ± std`` (or the mean alone for one seed, ``-`` when missing) as text."""
    mean, std = summary.get(f"{metric}_mean"), summary.get(f"{metric}_std")
    if mean is None:
        return "-"
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    columns: dict[str, None] = {}
    for r in rows:
        columns |= dict.fromkeys(r)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})


def write_tables(out: Path, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``points.csv/.json`` and ``summary.csv/.json`` in ``out``; returns the summary."""
    from fedlatent.bench.runner import write_atomic

    summary = summarize(rows)
    write_atomic(out / "points.json", list(rows))
    write_atomic(out / "summary.json", summary)
    _write_csv(out / "points.csv", rows)
    _write_csv(out / "summary.csv", summary)
    return summary
