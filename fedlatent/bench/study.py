"""``report.md`` and ``report.html`` of a sweep, readable without the code.

What: ``write_report(out)`` reads the sweep's rows (``aggregate``), draws its figures
(``figures``) and writes one document in two renderings — Markdown beside the PNGs, and a single
HTML file with the images embedded — holding the setup, the threat model, what ε means in each
mode, the summary table (mean ± std over seeds, the public-only bar and each mode's lift), the
figures, reconstruction grids of the attacked points, and the conclusion on the seed's two
claims, stated with the numbers the table holds.

Why blocks: the document is built once as a list of blocks (heading, paragraph, table, image)
and rendered twice, so the two files never say different things.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedlatent.bench.aggregate import _number, mean_std, point_rows, write_tables
from fedlatent.bench.anchors import anchors_for
from fedlatent.bench.claims import conclusions
from fedlatent.bench.figures import MODES, draw_all

Block = tuple[str, Any]

THREAT_MODEL = (
    "The attacker is the honest-but-curious server: it holds exactly what the run's server received "
    "(``server_view/``: every accepted upload, the shared latents and labels, the final model), what it "
    "knows (the public split with its labels when public-labels is on, the public encoder) and nothing "
    "else. Every attack reads that view only; its reconstructions are scored against the private records "
    "afterwards, beside trivial baselines the attacker gets for free (the aux mean image, the class-mean "
    "image of the released label). Leakage is the score beyond the best baseline."
)
EPSILON_MEANING = [
    "raw, latent-fedavg: each client's record-level (ε, δ) over every round of DP-SGD on its data "
    "(Opacus accountant), for the model updates it sends.",
    "latent-share: each client's (ε, δ) for its one release of clipped, Gaussian-noised latents; labels "
    "are in clear unless label-epsilon is set (then randomized response, added to ε). A guarantee that "
    "does not hold end to end (labels in clear, an encoder trained on private data without DP) is marked "
    "end_to_end_dp = false in the table.",
    "public-only: exactly 0 — no client is asked anything; it is the bar every federation must beat.",
]


def _interval(row: dict[str, Any], low: str, high: str) -> str:
    lo, hi = row.get(low), row.get(high)
    return "" if lo is None or hi is None else f" [{lo:+.3f}, {hi:+.3f}]"


def _leak_cells(s: dict[str, Any], points: Sequence[dict[str, Any]]) -> list[str]:
    """Leakage beyond the best baseline and individual leakage: with the 95% interval of a single
    point (one seed), else the mean ± std over seeds; the winning baseline and the leak's kind."""
    if len(points) == 1:
        r = points[0]
        leak = _fmt(r.get("inversion_leakage_ssim")) + _interval(r, "inversion_leakage_low", "inversion_leakage_high")
        leak += f" n={r['inversion_n']}" if r.get("inversion_n") else ""
        ind = _fmt(r.get("individual_leakage_ssim")) + _interval(r, "individual_low", "individual_high")
    else:
        leak = mean_std(s, "inversion_leakage_ssim", digits=3)
        ind = mean_std(s, "individual_leakage_ssim", digits=3)
    baselines = "/".join(sorted({str(p.get("inversion_baseline")) for p in points if p.get("inversion_baseline")}))
    kinds = {str(p["leak_kind"]) for p in points if p.get("leak_kind")}
    kind = "individual" if "individual" in kinds else "/".join(sorted(kinds))
    return [leak, baselines or "-", ind, kind or "-"]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def _table_rows(summary: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    e2e = {r["point"]: r.get("end_to_end_dp") for r in rows}
    by_point = {r["point"]: r for r in rows}
    out = []
    order = {m: i for i, m in enumerate(("public-only", *MODES))}
    for s in sorted(summary, key=lambda s: (_setting_text(s), _eps(s), order.get(s["mode"], 9))):
        out.append(
            [
                _setting_text(s),
                s["mode"],
                "0" if s["mode"] == "public-only" else ("∞" if math.isinf(_eps(s)) else f"{_eps(s):g}"),
                mean_std(s, "accuracy"),
                mean_std(s, "lift", scale=100, digits=1),
                mean_std(s, "epsilon", digits=3),
                mean_std(s, "epsilon_local", digits=3),
                "/".join(sorted({str(e2e.get(p)).lower() for p in s["points"]})),
                *_leak_cells(s, [by_point[p] for p in s["points"] if p in by_point]),
                mean_std(s, "mia_auc", digits=3),
                mean_std(s, "mia_tpr_at_0.001_fpr", scale=100, digits=2),
                str(len(s["seeds"])),
            ]
        )
    return out


HEADER = ["setting", "mode", "target ε", "accuracy", "lift (points)", "ε spent", "ε if SecAgg broken", "end-to-end DP"]
HEADER += ["inversion leakage SSIM (95% CI)", "best baseline", "individual leakage SSIM (95% CI)", "leak"]
HEADER += ["MIA AUC", "MIA TPR at 0.1% FPR (%)", "seeds"]


def _eps_text(eps: float) -> str:
    return "no DP" if math.isinf(eps) else f"ε={eps:g}"


def _eps(s: dict[str, Any]) -> float:
    e = _number(s.get("epsilon"))
    return math.inf if e is None else e


def _setting_text(s: dict[str, Any]) -> str:
    keys = ("dataset", "partition", "public-fraction", "public-labels")
    parts = [f"{s.get(k)}" if k in ("dataset", "partition") else f"{k} {s.get(k)}" for k in keys if k in s]
    if s.get("partition") == "dirichlet" and s["mode"] != "public-only":
        parts[1] += f" α={s.get('alpha')}"
    if s["mode"] == "public-only":
        parts = [p for p in parts if p not in ("iid", "dirichlet", "shards")]
    return ", ".join(parts)


def blocks(out: Path) -> list[Block]:
    """The report's content (see module docstring); writes the tables and figures on the way."""
    rows = point_rows(out)
    summary = write_tables(out, rows)
    figures = draw_all(out, rows, summary)
    sweep = json.loads((out / "sweep.json").read_text())
    spec = sweep["spec"]
    failed = json.loads((out / "failed.json").read_text()) if (out / "failed.json").is_file() else {}
    seconds = sum(float(json.loads((out / "points" / r["point"] / "point.json").read_text())["seconds"]) for r in rows)
    b: list[Block] = [("h1", f"fedlatent sweep: {Path(spec.get('source') or out).stem}")]
    if spec.get("description"):
        b.append(("p", spec["description"]))
    b += [("h2", "Setup")]
    count = f"{len(rows)} of {len(sweep['points'])} points finished ({len(failed)} failed)"
    b.append(("p", f"{count}; total run time {seconds / 60:.1f} min here. Sweep file: {spec.get('source')}."))
    b.append(("code", "base: " + json.dumps(spec["base"]) + "\ngrid: " + json.dumps(spec["grid"])))
    if rows:
        r0 = rows[0]
        b.append(("p", f"Records: {r0.get('records.public')} public, {r0.get('records.private')} private over the "
                       f"clients, {r0.get('records.test')} test (first point; the public split varies with "
                       "public-fraction). Attacks: " + (spec.get("attacks") or "none") + "."))  # fmt: skip
    b += [("h2", "Threat model"), ("p", THREAT_MODEL), ("h2", "What ε means per mode"), ("list", EPSILON_MEANING)]
    b += [("h2", "Results (mean ± std over seeds)"), ("table", (HEADER, _table_rows(summary, rows)))]
    b.append(("p", "lift = accuracy − the public-only accuracy of the same public split and seed, in points."))
    if hit := [
        f"{r['point']}: {r['rejected_replies.total']} replies rejected" for r in rows if r.get("rejected_replies.total")
    ]:
        b += [("p", "Points whose server rejected replies (their models lack those clients' updates):"), ("list", hit)]
    b += [("h2", "Conclusions on the seed's two claims"), ("list", conclusions(summary))]
    datasets = sorted({str(r.get("dataset")) for r in rows})
    if anchors := [a for d in datasets for a in anchors_for(d)]:
        b.append(("h2", "Published anchors (centralized, not federated; marked × in the figures)"))
        b.append(("list", [f"{a.dataset}, {a.label}, {_eps_text(a.epsilon)}: {100 * a.accuracy:.1f}% — {a.source}"
                           for a in anchors]))  # fmt: skip
    b.append(("h2", "Figures"))
    b += [("img", (p, p.stem.replace("-", " "))) for p in figures]
    grids = _grids(out, rows)
    if grids:
        b.append(("h2", "Reconstructions (top: private records; below: the attack, then the baselines)"))
        b += [("img", g) for g in grids]
    if failed:
        b += [("h2", "Failed points (rerun the sweep to retry)"), ("list", [f"{k}: {v}" for k, v in failed.items()])]
    return b


def _grids(out: Path, rows: Sequence[dict[str, Any]], per_mode: int = 2) -> list[tuple[Path, str]]:
    """Inversion grids of the first seed: each mode at no DP and at its smallest ε."""
    picked: list[tuple[Path, str]] = []
    for mode in MODES:
        mine = [r for r in rows if r.get("mode") == mode and str(r.get("seed")) == str(min(r2["seed"] for r2 in rows))]
        mine.sort(key=lambda r: -(_number(r.get("config.epsilon")) or math.inf))
        for r in mine[:1] + mine[-1:] if len(mine) > 1 else mine:
            grid = out / "points" / r["point"] / "attacks" / "latent-inversion.png"
            if not grid.is_file():
                grid = out / "points" / r["point"] / "attacks" / "gradient-inversion.png"
            if grid.is_file() and len([p for p in picked if mode in p[1]]) < per_mode:
                picked.append((grid, f"{mode}, {r['point']}"))
    return picked


def _md(b: list[Block], out: Path) -> str:
    lines: list[str] = []
    for kind, value in b:
        if kind in ("h1", "h2"):
            lines += ["#" * int(kind[1]) + " " + value, ""]
        elif kind == "p":
            lines += [value, ""]
        elif kind == "code":
            lines += ["```", value, "```", ""]
        elif kind == "list":
            lines += [f"- {v}" for v in value] + [""]
        elif kind == "table":
            header, rows = value
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
        elif kind == "img":
            path, caption = value
            lines += [f"![{caption}]({path.relative_to(out)})", ""]
    return "\n".join(lines)


def _html(b: list[Block]) -> str:
    e = html.escape
    parts = ["<!doctype html><meta charset='utf-8'><title>fedlatent sweep</title>",
             "<style>body{font-family:sans-serif;max-width:70em;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #999;padding:2px 6px;font-size:90%}img{max-width:100%}</style>"]  # fmt: skip
    for kind, value in b:
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{e(value)}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{e(value)}</p>")
        elif kind == "code":
            parts.append(f"<pre>{e(value)}</pre>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{e(v)}</li>" for v in value) + "</ul>")
        elif kind == "table":
            header, rows = value
            head = "".join(f"<th>{e(h)}</th>" for h in header)
            body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        elif kind == "img":
            path, caption = value
            data = base64.b64encode(path.read_bytes()).decode()
            parts.append(f"<figure><img alt='{e(caption)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{e(caption)}</figcaption></figure>")  # fmt: skip
    return "\n".join(parts) + "\n"


def write_report(out: Path) -> tuple[Path, Path]:
    """Write ``out/report.md`` and ``out/report.html`` (with the tables and figures); return their paths."""
    b = blocks(out)
    (out / "report.md").write_text(_md(b, out))
    (out / "report.html").write_text(_html(b))
    return out / "report.md", out / "report.html"
