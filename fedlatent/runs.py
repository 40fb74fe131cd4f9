"""Run one federation from a RunConfig: on a private simulation SuperLink or a local deployment.

The plumbing every verb of the ``fedlatent`` command shares (``run``, ``compare``, ``sweep``):
the Flower app to run, the federation to run it on (``federation``), one run and its
``results.json`` (``run_one``), and the config a CLI-started run gets (``run_config``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fedlatent.config import ConfigError, RunConfig
from fedlatent.federation.rundir import CHECKPOINT, CLIENT_STATE, check_out_dir, resumable
from fedlatent.launch.deployment import LocalDeployment
from fedlatent.launch.superlink import FederationError, LocalSuperLink

CLI_CLIENTS = 10  # clients the CLI starts when --clients is not given


def app_dir() -> Path:
    """The Flower app to run: this project's root (the same app ``flwr run .`` runs)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file() or "[tool.flwr.app]" not in (root / "pyproject.toml").read_text():
        raise SystemExit(
            f"fedlatent: no Flower app found at {root}; install fedlatent from its source tree (pip install -e .)"
        )
    return root


def echo_lines(verbose: bool, write: Callable[[str], None] | None = None) -> Any:
    """Progress printer: every line with --verbose, else rounds and fedlatent's own lines.

    ``write`` receives each kept line (default: stdout).
    """

    def echo(line: str) -> None:
        if verbose or any(tag in line for tag in ("[ROUND", "fedlatent", "ERROR", "Error", "Traceback")):
            if write is None:
                print(line.rstrip(), flush=True)
            else:
                write(line)

    return echo


@contextlib.contextmanager
def federation(args: argparse.Namespace, num_clients: int) -> Iterator[LocalSuperLink | LocalDeployment]:
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


def run_one(
    link: LocalSuperLink | LocalDeployment,
    cfg: RunConfig,
    *,
    verbose: bool,
    timeout: float,
    cpus: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one federation on ``link`` and return its ``results.json``.

    ``cpus`` caps a simulation's own Ray instance (default: every core); ``echo`` receives the
    output lines (default: ``echo_lines(verbose)``, to stdout).
    """
    settings, n, echo = cfg.to_run_config(), cfg.num_clients, echo or echo_lines(verbose)
    if isinstance(link, LocalDeployment):  # its SuperNodes are processes of their own: no Ray to cap
        result = link.run(app_dir(), run_config=settings, num_supernodes=n, timeout=timeout, echo=echo)
    else:
        result = link.run(app_dir(), run_config=settings, num_supernodes=n, cpus=cpus, timeout=timeout, echo=echo)
    results_path = Path(cfg.out_dir) / "results.json"
    if not results_path.is_file():
        failed = results_path.with_name("FAILED")
        reason = f": {failed.read_text().strip()}" if failed.is_file() else ""
        raise FederationError(f"run {result.run_id} finished but wrote no {results_path}{reason}")
    return json.loads(results_path.read_text())


def resume_config(run_dir: str | Path, overrides: dict[str, Any]) -> RunConfig:
    """The config that continues the run in ``run_dir`` from its checkpoint (``fedlatent run --resume``).

    The run's own settings, as its checkpoint saved them: a resume that changed any would not
    continue the same run, so ``overrides`` (settings given beside ``--resume``) are refused.
    """
    if overrides:
        given = ", ".join(f"--{key}" for key in overrides)
        raise ConfigError(f"--resume continues a run with the settings it started with; drop {given}")
    out = resumable(str(run_dir))
    saved = json.loads((out / CHECKPOINT / "state.json").read_text())["config"]
    cfg = RunConfig.from_run_config({**saved, "resume": True, "overwrite": False, "out-dir": str(out)})
    from fedlatent.preflight import preflight  # lazy: loads torch and the data

    preflight(cfg)
    return cfg


def run_config(overrides: dict[str, Any], default_out: str) -> RunConfig:
    """The validated config of a run the CLI starts: ``overrides`` plus the CLI's defaults.

    ``num-clients`` defaults to ``CLI_CLIENTS`` and must be >= 1 (the CLI starts the
    SuperNodes, so it needs a count); ``out-dir`` defaults to ``default_out``, made absolute,
    and must be a fresh directory unless ``overwrite`` (``rundir.check_out_dir``: refused before
    Flower starts). The clients the CLI starts keep their ledgers and releases in the run
    directory's ``client_state/`` (``client-state-dir``; their own disks, in a real deployment),
    so that the run can be resumed.
    """
    overrides.setdefault("num-clients", CLI_CLIENTS)
    if int(overrides["num-clients"]) < 1:  # the CLI starts the SuperNodes, so it needs a count
        raise ConfigError(f"config key 'num-clients' = {overrides['num-clients']!r}: must be >= 1")
    overrides.setdefault("out-dir", default_out)
    cfg = RunConfig.from_run_config(overrides)
    out = check_out_dir(cfg.out_dir, overwrite=cfg.overwrite)
    cfg = dataclasses.replace(cfg, out_dir=str(out), client_state_dir=cfg.client_state_dir or str(out / CLIENT_STATE))
    from fedlatent.preflight import preflight  # lazy: loads torch and the data, after the cheap checks

    preflight(cfg)
    return cfg
