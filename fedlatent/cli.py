"""The ``fedlatent`` command: ``run`` one federation, ``compare`` the modes, ``attack`` a run.

Both verbs run the real Flower app through ``flwr run`` on a private local SuperLink, as a
simulation (see ``launcher``) or, with ``--deployment``, on one SuperNode process per client
(see ``deployment``); every run-config key is also a CLI option (``--num-clients`` etc., with the
short aliases ``--clients`` and ``--out``), validated before Flower starts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fedlatent.attacks.presets import FAMILIES, PRESET_NAMES
from fedlatent.config import ConfigError, RunConfig
from fedlatent.launch.deployment import LocalDeployment
from fedlatent.launch.superlink import FederationError, LocalSuperLink
from fedlatent.learning.progress import show_log

ALIASES = {"num-clients": ["--clients"], "out-dir": ["--out"]}
CLI_CLIENTS = 10  # clients the CLI starts when --clients is not given
COMPARE_MODES = ("raw", "latent-fedavg", "latent-share")


def _add_config_options(parser: argparse.ArgumentParser, *, skip: Sequence[str] = ()) -> None:
    """One option per run-config key; unset options keep the config default."""
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
            help=f"{f.metadata['doc']} (default: {CLI_CLIENTS if key == 'num-clients' else f.default!r})",
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


def app_dir() -> Path:
    """The Flower app to run: this project's root (the same app ``flwr run .`` runs)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file() or "[tool.flwr.app]" not in (root / "pyproject.toml").read_text():
        raise SystemExit(
            f"fedlatent: no Flower app found at {root}; install fedlatent from its source tree (pip install -e .)"
        )
    return root


def _echo(verbose: bool) -> Any:
    """Progress printer: every line with --verbose, else rounds and fedlatent's own lines."""

    def echo(line: str) -> None:
        if verbose or any(tag in line for tag in ("[ROUND", "fedlatent", "ERROR", "Error", "Traceback")):
            print(line.rstrip(), flush=True)

    return echo


@contextlib.contextmanager
def _federation(args: argparse.Namespace, num_clients: int) -> Iterator[LocalSuperLink | LocalDeployment]:
    """A simulation's SuperLink, or with ``--deployment`` one with ``num_clients`` SuperNodes."""
    with tempfile.TemporaryDirectory(prefix="fedlatent-flwr-") as home:
        if (args.tls or args.auth) and not args.deployment:
            raise ConfigError("--tls and --auth secure the deployment path: add --deployment")
        if args.auth and not args.tls:
            raise ConfigError("--auth needs --tls (Flower authenticates SuperNodes over TLS only)")
        if args.deployment:
            secure = {"tls": args.tls, "auth": args.auth}
            with LocalDeployment(flwr_home=Path(home), num_supernodes=num_clients, **secure) as deployment:
                yield deployment
        else:
            with LocalSuperLink(flwr_home=Path(home)) as link:
                yield link


def run_one(link: LocalSuperLink | LocalDeployment, cfg: RunConfig, *, verbose: bool, timeout: float) -> dict[str, Any]:
    """Run one federation on ``link`` and return its ``results.json``."""
    result = link.run(
        app_dir(),
        run_config=cfg.to_run_config(),
        num_supernodes=cfg.num_clients,
        timeout=timeout,
        echo=_echo(verbose),
    )
    results_path = Path(cfg.out_dir) / "results.json"
    if not results_path.is_file():
        raise FederationError(f"run {result.run_id} finished but wrote no {results_path}")
    return json.loads(results_path.read_text())


def run_config(overrides: dict[str, Any], default_out: str) -> RunConfig:
    """The validated config of a run the CLI starts: ``overrides`` plus the CLI's defaults.

    ``num-clients`` defaults to ``CLI_CLIENTS`` and must be >= 1 (the CLI starts the
    SuperNodes, so it needs a count); ``out-dir`` defaults to ``default_out``, made absolute.
    """
    overrides.setdefault("num-clients", CLI_CLIENTS)
    if int(overrides["num-clients"]) < 1:  # the CLI starts the SuperNodes, so it needs a count
        raise ConfigError(f"config key 'num-clients' = {overrides['num-clients']!r}: must be >= 1")
    overrides.setdefault("out-dir", default_out)
    overrides["out-dir"] = str(Path(overrides["out-dir"]).expanduser().resolve())
    return RunConfig.from_run_config(overrides)


def cmd_run(args: argparse.Namespace) -> int:
    """``fedlatent run``: one federation, one run directory."""
    cfg = run_config(_overrides(args), default_out=f"runs/{_stamp()}-run")
    with _federation(args, cfg.num_clients) as link:
        results = run_one(link, cfg, verbose=args.verbose, timeout=args.timeout)
    print(f"\naccuracy {results['accuracy']:.4f}  ({results['wall_seconds']:.1f} s)  -> {cfg.out_dir}")
    return 0


def compare_configs(overrides: dict[str, Any], modes: Sequence[str], parent: Path) -> list[RunConfig]:
    """One config per mode; with a finite ``epsilon``, a non-private twin before each DP run.

    Every run shares ``parent/.cache`` unless ``cache-dir`` is given, so the public
    autoencoder, identical in every run, is trained once.
    """
    base = {**overrides, "cache-dir": overrides.get("cache-dir") or str(parent / ".cache")}
    epsilon = float(base.pop("epsilon", math.inf))
    cfgs = []
    for mode in modes:
        cfgs.append(run_config({**base, "mode": mode}, default_out=str(parent / mode)))
        if math.isfinite(epsilon):
            dp = {**base, "mode": mode, "epsilon": epsilon}
            cfgs.append(run_config(dp, default_out=str(parent / f"{mode}-eps{epsilon:g}")))
    return cfgs


def cmd_compare(args: argparse.Namespace) -> int:
    """``fedlatent compare``: raw vs latent-fedavg vs latent-share (with ``--epsilon``: and their DP runs)."""
    from fedlatent.compare import summarize

    base = _overrides(args)
    parent = Path(base.pop("out-dir", f"runs/{_stamp()}-compare")).expanduser().resolve()
    cfgs = compare_configs(base, args.modes, parent)
    rows = []
    with _federation(args, cfgs[0].num_clients) as link:
        for i, cfg in enumerate(cfgs):
            eps = "" if not cfg.dp else f", epsilon {cfg.epsilon:g}"
            print(f"\n== [{i + 1}/{len(cfgs)}] {cfg.mode} ({cfg.dataset}, encoder {cfg.encoder}{eps}) ==", flush=True)
            rows.append(run_one(link, cfg, verbose=args.verbose, timeout=args.timeout))
    if args.attack:  # after the federation is down: attacks need the CPUs, not the SuperLink
        from fedlatent.attacks.run import run_attacks

        for cfg in cfgs:
            print(f"\n== attacks on {cfg.mode}{'' if not cfg.dp else f' (epsilon {cfg.epsilon:g})'} ==", flush=True)
            run_attacks(cfg.out_dir, preset=args.attack)
    from fedlatent.baselines import public_only

    print("\n== public-only: the same classifiers on the public split alone ==", flush=True)
    baseline = public_only(dataclasses.replace(cfgs[0], epsilon=math.inf))
    summarize(rows, parent, baseline=baseline)
    return 0


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
    run_bench(out, dataset=args.dataset, clients=args.clients, datasets=args.datasets, epsilon=args.epsilon)
    return 0


def _stamp() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every verb."""
    parser = argparse.ArgumentParser(prog="fedlatent", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="run one Flower federation and write its run directory")
    _add_config_options(run)
    run.set_defaults(func=cmd_run)
    compare = verbs.add_parser(
        "compare",
        help="run raw, latent-fedavg and latent-share; print a table (--epsilon E: each also with DP at E)",
    )
    _add_config_options(compare, skip=("mode",))
    compare.add_argument("--modes", nargs="+", choices=COMPARE_MODES, default=list(COMPARE_MODES))
    compare.add_argument(
        "--attack",
        choices=PRESET_NAMES,
        default=None,
        help="also run every attack on every run (at this effort) and add their columns",
    )
    compare.set_defaults(func=cmd_compare)
    attack = verbs.add_parser("attack", help="run the privacy attacks on finished runs; write attacks.json + PNGs")
    attack.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by run/compare")
    attack.add_argument("--only", nargs="+", choices=FAMILIES, default=list(FAMILIES), help="attack families to run")
    attack.add_argument("--preset", choices=PRESET_NAMES, default="full", help="attack effort (quick: smoke test)")
    attack.add_argument("--seed", type=int, default=0, help="seed of the attacks")
    attack.set_defaults(func=cmd_attack)
    bench = verbs.add_parser("bench", help="performance benchmark: federated vs central, scale, memory, DP step")
    bench.add_argument("--dataset", default="fashion-mnist", help="data set of the federated-vs-central runs")
    bench.add_argument("--clients", nargs="+", type=int, default=[10, 100, 1000], help="latent-share client counts")
    bench.add_argument("--datasets", nargs="+", default=["digits", "fashion-mnist"], help="data sets of the scale runs")
    bench.add_argument("--epsilon", type=float, default=3.0, help="budget of the DP runs")
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
    except ConfigError as err:
        print(f"fedlatent: {err}", file=sys.stderr)
        return 2
    except FederationError as err:
        print(f"fedlatent: the federation failed: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
