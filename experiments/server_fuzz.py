"""The outside fuzz of the real ServerApp on its seven reply paths, tallied (``fedlatent.bench.server_fuzz``).

What: for each path of ``server_fuzz.PATHS`` (train plain, DP-SGD, client-level DP, latent
sharing plain and DP, per-round and final federated evaluation), whole runs on ``digits`` with
6 nodes of which 2 are hostile (each of their replies mutated with probability 0.8) until the
path's share of ``--replies`` replies reached the server. Writes
``experiments/results/server-fuzz.json`` (every count, by mutation kind with the reasons
given) and ``.md`` (the tables), and prints progress.

Why: the server must take nothing on trust from clients; this measures, from the outside, the
invalid replies it accepted, the valid ones it refused, crashes, and whether any privacy figure
of ``results.json`` came from a reply.

    OMP_NUM_THREADS=1 python experiments/server_fuzz.py --replies 5000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fedlatent.bench.fuzz_mutations import EITHER, VALID
from fedlatent.bench.server_fuzz import PATHS, fuzz

RESULTS = Path(__file__).parent / "results"
COLUMNS = ("replies", "mutated", "crashes", "violations_accepted", "valid_refused", "unrecorded")
HEADER = (
    "| path | runs | replies | mutated | of them invalid / valid variations | crashes | violations accepted "
    "| valid refused | unrecorded | identify (replies / mutated) | privacy problems | seconds |"
)


def markdown(report: dict[str, Any]) -> str:
    """The report as tables: one row per path, then each path's mutation kinds with the reasons given."""
    lines = [
        "# Outside fuzz of the ServerApp",
        "",
        f"{report['total_replies']} replies in {report['wall_seconds'] / 60:.1f} min on one core (seed "
        f"{report['seed']}); runs of 6 nodes on digits, 2 hostile, each hostile reply mutated with probability "
        f"{report['rate']}. `python experiments/server_fuzz.py --replies {report['target_replies']}`.",
        "",
        "Oracle: a kind in **valid** must be accepted; a kind in *either* may be accepted or refused (absurd "
        "latents where the server holds no bound); every other kind must be refused with a reason. "
        "`privacy` compares epsilon and noise multipliers of results.json with each client's own ledger.",
        "",
        "`mutated` counts every changed reply: invalid ones, valid variations, the second copy of a duplicate.",
        "",
        HEADER,
        "|---" * HEADER.count(" | ") + "|---|",
    ]
    for name, t in report["paths"].items():
        sent = {kind: k["sent"] for kind, k in t["kinds"].items() if kind != "honest"}
        valid = sum(n for kind, n in sent.items() if kind in VALID)
        invalid = sum(n for kind, n in sent.items() if kind not in VALID | EITHER)
        cells = [name, t["runs"], t["replies"], t["mutated"], f"{invalid} / {valid}", *(t[c] for c in COLUMNS[2:])]
        cells += [f"{t['identify']['replies']} / {t['identify']['mutated']}", t["privacy"]["problems"], t["seconds"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    for name, t in report["paths"].items():
        lines += ["", f"## {name}", "", "| kind | oracle | sent | accepted | refused | reasons |", "|---" * 6 + "|"]
        for kind, k in t["kinds"].items():
            oracle = "**valid**" if kind in VALID else "*either*" if kind in EITHER else "invalid"
            reasons = "; ".join(f"{n} x {r}" for r, n in k["reasons"].items()).replace("|", "\\|")
            lines.append(f"| {kind} | {oracle} | {k['sent']} | {k['accepted']} | {k['refused']} | {reasons} |")
        if t["failures"]:
            lines += ["", "Failures:", *(f"- {f}" for f in t["failures"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replies", type=int, default=5000, help="replies in all, shared equally by the paths")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rate", type=float, default=0.8, help="chance that a hostile reply is mutated")
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    ap.add_argument("--out", type=Path, default=RESULTS / "server-fuzz")
    args = ap.parse_args()
    torch.set_num_threads(1)
    start, paths = time.time(), {}
    share = -(-args.replies // len(args.paths))
    with tempfile.TemporaryDirectory(prefix="server-fuzz-") as runs:
        for name in args.paths:
            print(f"{name}: {share} replies ...", flush=True)
            tally = fuzz(name, replies=share, seed=args.seed, out=Path(runs) / name, rate=args.rate)
            paths[name] = tally
            print("  " + ", ".join(f"{c} {tally[c]}" for c in ("runs", *COLUMNS, "seconds")), flush=True)
            for failure in tally["failures"][:5]:
                print(f"  ! {failure}", flush=True)
    report = {
        "target_replies": args.replies,
        "total_replies": sum(t["replies"] for t in paths.values()),
        "wall_seconds": round(time.time() - start, 1),
        "seed": args.seed,
        "rate": args.rate,
        "totals": {c: sum(t[c] for t in paths.values()) for c in COLUMNS},
        "paths": paths,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(f"{report['total_replies']} replies in {report['wall_seconds']:.0f} s: {report['totals']}")
    print(f"-> {args.out.with_suffix('.json')}, {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
