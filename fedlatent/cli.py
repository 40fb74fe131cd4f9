"""The ``fedlatent`` command: ``run`` one federation, ``compare`` the modes, ``attack`` a run.

Both verbs run the real Flower app through ``flwr run`` on a private local SuperLink, as a
simulation (see ``launcher``) or, with ``--deployment``, on one SuperNode process per client
(see ``deployment``); every run-config key is also a CLI option (``--num-clients`` etc., with the
short aliases ``--clients`` and ``--out``), validated before Flower starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedlatent.attacks.presets import FAMILIES, PRESET_NAMES
from fedlatent.bench.compare_spec import ATTACKS as COMPARE_ATTACKS
from fedlatent.bench.compare_spec import EPSILON as COMPARE_EPSILON
from fedlatent.bench.compare_spec import MODES as COMPARE_MODES
from fedlatent.bench.compare_spec import profile
from fedlatent.bench.perf import PARTS
from fedlatent.config import ENCODERS, ConfigError, RunConfig
from fedlatent.data.loading import DataError
from fedlatent.launch.superlink import FederationError
from fedlatent.learning.progress import show_log
from fedlatent.runs import CLI_CLIENTS, federation, resume_config, run_config, run_one

ALIASES = {"num-clients": ["--clients"], "out-dir": ["--out"]}
# compare's defaults as its --help shows them: the fashion-mnist profile (another --dataset, its own)
COMPARE_DEFAULTS = {"dataset": "fashion-mnist", "epsilon": COMPARE_EPSILON, **profile("fashion-mnist")}


def _add_config_options(
    parser: argparse.ArgumentParser, *, skip: Sequence[str] = (), defaults: dict[str, Any] | None = None
) -> None:
    """One option per run-config key; unset options keep the config default (or the verb's ``defaults``)."""
    shown = {"num-clients": CLI_CLIENTS, **(defaults or {})}
    for f in dataclasses.fields(RunConfig):
        key = f.name.replace("_", "-")
        if key in skip:
            continue
        kind = type(f.default)
        parser.add_argument(
            f"--{key}",
            *ALIASES.get(key, []),
            dest=f.name,
            type=(lambda s: s) if kind is bool else kind,
            default=None,
            metavar=kind.__name__.upper(),
            help=f"{f.metadata['doc']} (default: {shown.get(key, f.default)!r})",
        )
    parser.add_argument("--verbose", action="store_true", help="show Flower's full log")
    parser.add_argument(
        "--deployment",
        action="store_true",
        help="run as a local deployment: a SuperLink and one SuperNode process per client (default: simulation)",
    )
    parser.add_argument(
        "--tls", action="store_true", help="with --deployment: serve the SuperLink over TLS (a CA made for the run)"
    )
    parser.add_argument(
        "--auth", action="store_true", help="with --tls: only SuperNodes with a registered key may connect"
    )
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds before a run is stopped")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        f.name.replace("_", "-"): getattr(args, f.name)
        for f in dataclasses.fields(RunConfig)
        if getattr(args, f.name, None) is not None
    }


def cmd_run(args: argparse.Namespace) -> int:
    """``fedlatent run``: one federation, one run directory."""
    if args.resume_dir:
        cfg = resume_config(args.resume_dir, _overrides(args))
    else:
        cfg = run_config(_overrides(args), default_out=f"runs/{_stamp()}-run")
    with federation(args, cfg.num_clients) as link:
        results = run_one(link, cfg, verbose=args.verbose, timeout=args.timeout)
    print(f"\naccuracy {results['accuracy']:.4f}  ({results['wall_seconds']:.1f} s)  -> {cfg.out_dir}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``fedlatent compare``: each mode and encoder without DP and at ``--epsilon``, the bar, an answer."""
    from fedlatent.bench.compare import show_compare
    from fedlatent.bench.compare_spec import compare_spec

    overrides = _overrides(args)
    out = Path(overrides.pop("out-dir", None) or f"runs/{_stamp()}-compare").expanduser().resolve()
    epsilon = float(overrides.pop("epsilon", COMPARE_EPSILON))  # --epsilon inf: the non-private runs only
    only = args.only or (COMPARE_ATTACKS if args.attack == "quick" else FAMILIES)
    spec = compare_spec(
        overrides, modes=args.modes, encoders=args.encoders, epsilon=epsilon, attacks=args.attack, families=only
    )
    code = _run_spec(args, spec, out, clients=int(spec.base.get("num-clients", CLI_CLIENTS)))
    show_compare(out)
    return code


def cmd_attack(args: argparse.Namespace) -> int:
    """``fedlatent attack RUN_DIR``: every attack on what the run's server saw."""
    from fedlatent.attacks.run import run_attacks

    for run_dir in args.run_dirs:
        if not (Path(run_dir) / "server_view" / "manifest.json").is_file():
            raise ConfigError(f"{run_dir} is not a finished fedlatent run directory (no server_view/manifest.json)")
    for run_dir in args.run_dirs:
        print(f"\n== attacks on {run_dir} ==", flush=True)
        run_attacks(run_dir, only=args.only, preset=args.preset, seed=args.seed)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """``fedlatent bench``: the performance benchmark (federated vs central, scale, memory, DP step)."""
    from fedlatent.bench.perf import run_bench

    out = Path(args.out or f"runs/{_stamp()}-bench").expanduser().resolve()
    run_bench(
        out, dataset=args.dataset, clients=args.clients, datasets=args.datasets, epsilon=args.epsilon,
        parts=args.parts,
    )  # fmt: skip
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """``fedlatent sweep FILE --out DIR``: every point of a sweep file, resumably; then the report."""
    from fedlatent.bench.sweep import SweepSpec, parse_axis, with_axes

    spec = with_axes(SweepSpec.load(args.file), [parse_axis(a) for a in args.grid])
    out = Path(args.out or f"runs/{_stamp()}-sweep").expanduser().resolve()
    if args.ray:
        from fedlatent.bench.ray_sweep import run_sweep_on_ray

        if args.ray_cpus < 1:
            raise ConfigError("--ray-cpus must be at least 1")
        done = run_sweep_on_ray(spec, out, address=args.ray, cpus=args.ray_cpus, verbose=args.verbose,
                                timeout=args.timeout)  # fmt: skip
        return _reported(out, done)
    return _run_spec(args, spec, out, clients=1)


def _run_spec(args: argparse.Namespace, spec: Any, out: Path, *, clients: int) -> int:
    """Every point of a sweep ``spec`` into ``out`` on one federation, then its report; 1 if a point failed."""
    from fedlatent.attacks.run import run_attacks
    from fedlatent.bench.runner import run_sweep
    from fedlatent.bench.sweep import SweepSpec, points

    log = logging.getLogger("fedlatent")
    points(spec)  # every point validated before Flower starts

    def attack(run_dir: Path, spec: SweepSpec) -> dict[str, Any]:
        return run_attacks(run_dir, only=spec.families, preset=spec.attacks, progress=lambda s: log.info(s.strip()))

    with federation(args, clients) as link:
        done = run_sweep(
            spec,
            out,
            run_point=lambda cfg: run_one(link, cfg, verbose=args.verbose, timeout=args.timeout),
            attack_point=attack,
            run_config=run_config,
            resume_config=resume_config,
        )
    return _reported(out, done)


def _reported(out: Path, done: dict[str, Any]) -> int:
    """Write a finished sweep's report and say what happened; 1 if a point failed."""
    from fedlatent.bench.study import write_report

    md, html = write_report(out)
    print(f"\n{done['finished']}/{done['points']} points finished ({done['skipped']} from before) "
          f"in {done['seconds'] / 60:.1f} min -> {md}, {html}")  # fmt: skip
    if done["failed"]:
        print(f"fedlatent: {len(done['failed'])} point(s) failed (see {out / 'failed.json'}); rerun to retry")
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``fedlatent report DIR``: the tables, figures and report of a (possibly unfinished) sweep."""
    from fedlatent.bench.study import write_report

    out = Path(args.dir).expanduser().resolve()
    if not (out / "sweep.json").is_file():
        raise ConfigError(f"{out} is not a sweep directory (no sweep.json); run `fedlatent sweep FILE --out DIR`")
    md, html = write_report(out)
    print(f"report: {md}, {html}")
    return 0


def _stamp() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every verb."""
    parser = argparse.ArgumentParser(prog="fedlatent", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="run one Flower federation and write its run directory")
    _add_config_options(run, skip=("resume",))
    run.add_argument(
        "--resume",
        dest="resume_dir",
        metavar="RUN_DIR",
        default=None,
        help="continue a killed run from its last checkpoint, as it was",
    )
    run.set_defaults(func=cmd_run)
    compare = verbs.add_parser(
        "compare",
        help="each mode and encoder without DP and at eps=3 (--epsilon), quick attacks, the public-only bar; "
        "print a table, its answer and report.html (resumable: rerun with the same --out)",
    )
    _add_config_options(compare, skip=("mode", "encoder", "resume"), defaults=COMPARE_DEFAULTS)
    compare.add_argument("--modes", nargs="+", choices=COMPARE_MODES, default=list(COMPARE_MODES))
    compare.add_argument(
        "--encoders",
        nargs="+",
        choices=ENCODERS,
        default=None,
        help="encoders of every latent mode (default: latent-fedavg with scatternet, latent-share with public; "
        "--encoders public scatternet runs every pair)",
    )
    compare.add_argument(
        "--attack",
        choices=(*PRESET_NAMES, "none"),
        default="quick",
        help="attack effort on every run, for the leakage columns (default quick: "
        f"{', '.join(COMPARE_ATTACKS)}; none: no attacks)",
    )
    compare.add_argument("--only", nargs="+", choices=FAMILIES, default=None, help="attack families to run")
    compare.set_defaults(func=cmd_compare)
    attack = verbs.add_parser("attack", help="run the privacy attacks on finished runs; write attacks.json + PNGs")
    attack.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by run/compare")
    attack.add_argument("--only", nargs="+", choices=FAMILIES, default=list(FAMILIES), help="attack families to run")
    attack.add_argument("--preset", choices=PRESET_NAMES, default="full", help="attack effort (quick: smoke test)")
    attack.add_argument("--seed", type=int, default=0, help="seed of the attacks")
    attack.set_defaults(func=cmd_attack)
    sweep = verbs.add_parser("sweep", help="run a sweep file (a grid of runs + attacks), resumably; write its report")
    sweep.add_argument("file", help="sweep file (TOML): [sweep], [base] and [grid] tables")
    sweep.add_argument("--out", default=None, help="sweep directory (rerun with the same one to resume)")
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="replace one axis of the file's grid (repeatable), e.g. --grid seed=0 --grid partition=iid",
    )
    sweep.add_argument("--verbose", action="store_true", help="show Flower's full log")
    sweep.add_argument("--timeout", type=float, default=6 * 3600, help="seconds before one point is stopped")
    sweep.add_argument("--ray", metavar="ADDRESS", default=None,
                       help="run the points in parallel on this Ray cluster (e.g. auto, or HEAD_IP:6379)")  # fmt: skip
    sweep.add_argument("--ray-cpus", type=int, default=2, help="CPUs each point declares on the cluster (default 2)")
    sweep.set_defaults(func=cmd_sweep, deployment=False, tls=False, auth=False)
    report = verbs.add_parser("report", help="write report.md/.html, tables and figures of a sweep directory")
    report.add_argument("dir", help="the sweep directory")
    report.set_defaults(func=cmd_report)
    bench = verbs.add_parser("bench", help="performance benchmark: federated vs central, scale, memory, DP step")
    bench.add_argument("--dataset", default="fashion-mnist", help="data set of the federated-vs-central runs")
    bench.add_argument("--clients", nargs="+", type=int, default=[10, 100, 1000], help="latent-share client counts")
    bench.add_argument("--datasets", nargs="+", default=["digits", "fashion-mnist"], help="data sets of the scale runs")
    bench.add_argument("--epsilon", type=float, default=3.0, help="budget of the DP runs")
    bench.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which parts (default: all)")
    bench.add_argument("--out", default=None, help="output folder (default runs/<time>-bench)")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedlatent`` console script."""
    args = build_parser().parse_args(argv)
    show_log()  # fedlatent's own progress lines (attacks, benchmarks), as the ServerApp shows its own
    # SIGTERM (e.g. a killed job) must unwind the with-blocks that stop the SuperLink and
    # SuperNodes, or they would outlive the command.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return int(args.func(args))
    except (ConfigError, DataError) as err:  # bad settings or data: one line, before Flower starts
        print(f"fedlatent: {err}", file=sys.stderr)
        return 2
    except FederationError as err:
        print(f"fedlatent: the federation failed: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
