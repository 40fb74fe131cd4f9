"""``fedlatent bench``: the performance benchmark, as ratios that hold on a noisy machine.

From one invocation, on one private SuperLink (real ``flwr run`` simulations):

- ``fed_vs_central``: federated wall time ÷ the same training done centrally in one process
  (``central.py``), for ``raw`` and ``latent-fedavg``, with and without DP;
- ``dp_step``: a DP-SGD step ÷ a plain step, per model, batch size and clipping method
  (``steps.py``);
- ``recipe``: the fair raw DP baseline (``experiments/raw-cnn-fmnist.toml``'s recipe at
  ε = 3, 10 clients): wall seconds and accuracy of one run;
- ``scale``: ``latent-share`` at growing client counts on each data set: seconds per client
  message (the share broadcast's wall time ÷ its messages; it must not grow with the data
  set), peak resident memory of all Flower processes, bytes uploaded per client;
- ``rounds``: ``raw`` and ``latent-fedavg`` at 100 clients with ``fraction-train 0.1``: seconds
  per round, peak memory, bytes uploaded per client;
- ``ray-sweep``: a small sweep with ``--ray`` on a local cluster of one and of two nodes:
  points per hour (``ray_bench.py``);
- ``secagg``: distributed DP through SecAgg+ beside plain FedAvg at 10 and 100 clients
  (``secure.py``): seconds and bytes per round.

Writes ``bench.json`` (every figure), ``bench.md`` (the tables) and ``bench.png``.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedlatent.bench.central import central_seconds
from fedlatent.bench.ray_bench import ray_throughput
from fedlatent.bench.report import write_report
from fedlatent.bench.secure import secagg_cost
from fedlatent.bench.steps import dp_step_table
from fedlatent.config import RunConfig
from fedlatent.jsonable import jsonable
from fedlatent.launch.processes import sessions_rss, tree_sessions
from fedlatent.launch.superlink import LocalSuperLink

# Small enough for 2 cores, large enough that fixed costs do not dominate.
FED = {"rounds": 3, "local-epochs": 1, "ae-epochs": 5, "num-clients": 10, "epsilon": "inf"}
SHARE = {"mode": "latent-share", "encoder": "public", "ae-epochs": 1, "server-epochs": 1, "ae-batch-size": 256}
# The fair raw DP baseline (experiments/raw-cnn-fmnist.toml): Tramer & Boneh 2021's recipe per client.
RECIPE = {
    "mode": "raw", "num-clients": 10, "public-fraction": 0.01, "classifier-arch": "tanh-cnn", "optimizer": "sgd",
    "momentum": 0.9, "lr": 4.0, "max-grad-norm": 0.1, "batch-size": 203, "rounds": 10, "local-epochs": 4,
}  # fmt: skip
PARTS = ("dp-step", "recipe", "ray-sweep", "fed-vs-central", "rounds", "secagg", "scale")


@contextmanager
def peak_memory(link: LocalSuperLink, every: float = 0.5) -> Iterator[dict[str, int]]:
    """Sample the resident memory of every process the SuperLink started; yields ``{"peak": bytes}``."""
    result = {"peak": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            if link.pid is not None:
                result["peak"] = max(result["peak"], sessions_rss(tree_sessions(link.pid)))
            done.wait(every)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        done.set()
        thread.join()


class Bench:
    """One benchmark invocation: a SuperLink, an output folder, and the runs made so far."""

    def __init__(self, link: LocalSuperLink, out: Path, *, dataset: str, echo: Callable[[str], None]) -> None:
        self.link, self.out, self.dataset, self.echo = link, out, dataset, echo

    def federation(self, name: str, overrides: dict[str, Any]) -> dict[str, Any]:
        """Run one federation; return its results.json with the peak memory and launcher wall time."""
        from fedlatent.runs import app_dir  # the app this package belongs to

        run_dir = self.out / "runs" / name
        settings = {"dataset": self.dataset, **overrides, "out-dir": str(run_dir)}
        cfg = RunConfig.from_run_config(settings)
        self.echo(f"bench: {name} ({cfg.num_clients} clients, {cfg.mode}, {cfg.dataset}) ...")
        start = time.monotonic()
        with peak_memory(self.link) as memory:
            self.link.run(app_dir(), run_config=cfg.to_run_config(), num_supernodes=cfg.num_clients, timeout=3600)
        results = json.loads((run_dir / "results.json").read_text())
        results["peak_rss_bytes"] = memory["peak"]
        results["launcher_seconds"] = time.monotonic() - start
        self.echo(f"bench: {name}: {results['wall_seconds']:.1f} s, peak {memory['peak'] / 2**30:.2f} GiB")
        return results


def fed_vs_central(bench: Bench, *, epsilon: float) -> list[dict[str, Any]]:
    """Federated ÷ centralized wall time for raw and latent-fedavg, without and with DP."""
    rows = []
    for mode in ("raw", "latent-fedavg"):
        for eps in (float("inf"), epsilon):
            name = f"{mode}-eps{eps:g}"
            res = bench.federation(name, {**FED, "mode": mode, "encoder": "public", "epsilon": eps})
            cfg = RunConfig.from_run_config(res["config"])
            central, central_acc = central_seconds(dataclasses.replace(cfg, out_dir=""))
            rows.append(
                {
                    "mode": mode, "epsilon": None if eps == float("inf") else eps,
                    "federated_seconds": res["wall_seconds"], "central_seconds": central,
                    "ratio": res["wall_seconds"] / central, "federated_accuracy": res["accuracy"],
                    "central_accuracy": central_acc,
                    "bytes_uploaded_per_client": res["bytes_uploaded"] / res["num_clients"],
                }
            )  # fmt: skip
    return rows


def scale(bench: Bench, *, clients: Sequence[int], datasets: Sequence[str]) -> list[dict[str, Any]]:
    """latent-share at each client count and data set: per-message cost, memory, bytes."""
    rows = []
    for dataset in datasets:
        for n in clients:
            bench.dataset = dataset
            res = bench.federation(f"share-{dataset}-{n}", {**SHARE, "num-clients": n})
            share = res["phase_seconds"].get("share_latents", float("nan"))
            rows.append(
                {
                    "dataset": dataset, "clients": n, "round_seconds": share, "seconds_per_message": share / n,
                    "wall_seconds": res["wall_seconds"], "peak_rss_bytes": res["peak_rss_bytes"],
                    "bytes_uploaded_per_client": res["bytes_uploaded"] / n,
                }
            )  # fmt: skip
    return marginal(rows)


def marginal(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``marginal_seconds_per_message``: the round's growth per extra client since the previous count.

    The first messages of a run pay for starting Ray actors and importing torch, so the mean
    per message overstates small federations; the slope between two client counts does not.
    """
    previous: dict[str, dict[str, Any]] = {}
    for row in rows:
        before = previous.get(row["dataset"])
        if before is not None and row["clients"] > before["clients"]:
            extra = row["clients"] - before["clients"]
            row["marginal_seconds_per_message"] = (row["round_seconds"] - before["round_seconds"]) / extra
        previous[row["dataset"]] = row
    return rows


def recipe(bench: Bench, *, epsilon: float) -> dict[str, Any]:
    """One run of the fair raw DP baseline on Fashion-MNIST: its wall time, accuracy and ε."""
    bench.dataset = "fashion-mnist"  # the recipe's data set, whatever the bench's
    res = bench.federation(f"recipe-eps{epsilon:g}", {**RECIPE, "epsilon": epsilon})
    return {"epsilon": res["epsilon"], "accuracy": res["accuracy"], "wall_seconds": res["wall_seconds"],
            "launcher_seconds": res["launcher_seconds"], "rounds": res["rounds"]}  # fmt: skip


def rounds(bench: Bench, *, clients: int = 100) -> list[dict[str, Any]]:
    """raw and latent-fedavg at ``clients`` clients, a tenth sampled per round."""
    rows = []
    for mode in ("raw", "latent-fedavg"):
        over = {**FED, "mode": mode, "num-clients": clients, "fraction-train": 0.1}
        res = bench.federation(f"{mode}-{clients}", over)
        per_round = [row["seconds"] for row in res["history"] if "seconds" in row]
        rows.append(
            {
                "mode": mode, "clients": clients, "fraction_train": 0.1,
                "seconds_per_round": sum(per_round) / max(len(per_round), 1),
                "peak_rss_bytes": res["peak_rss_bytes"], "accuracy": res["accuracy"],
                "bytes_uploaded_per_client": res["bytes_uploaded"] / clients,
            }
        )  # fmt: skip
    return rows


def run_bench(
    out: Path,
    *,
    dataset: str = "fashion-mnist",
    clients: Sequence[int] = (10, 100, 1000),
    datasets: Sequence[str] = ("digits", "fashion-mnist"),
    epsilon: float = 3.0,
    parts: Sequence[str] = PARTS,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the benchmark's ``parts`` (module docstring; default all); write and return ``bench.json``."""
    if unknown := set(parts) - set(PARTS):
        raise ValueError(f"unknown bench part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"dataset": dataset, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if "dp-step" in parts:
        report["dp_step"] = dp_step_table(echo=echo)
    if "ray-sweep" in parts:  # clusters of its own, one SuperLink per point
        report["ray_sweep"] = ray_throughput(out, echo=echo)
    federated: dict[str, Callable[[Bench], Any]] = {
        "recipe": lambda b: recipe(b, epsilon=epsilon),
        "fed_vs_central": lambda b: fed_vs_central(b, epsilon=epsilon),
        "rounds": rounds,
        "secagg": secagg_cost,
        "scale": lambda b: scale(b, clients=clients, datasets=datasets),
    }
    wanted = [key for key in federated if key.replace("_", "-") in parts]
    if wanted:  # one private SuperLink for every federated part
        with tempfile.TemporaryDirectory(prefix="fedlatent-flwr-") as home:
            with LocalSuperLink(flwr_home=Path(home)) as link:
                for key in wanted:
                    report[key] = federated[key](Bench(link, out, dataset=dataset, echo=echo))
    (out / "bench.json").write_text(json.dumps(jsonable(report), indent=2, allow_nan=False) + "\n")
    write_report(report, out)
    echo(f"bench: {out / 'bench.md'}, bench.json, bench.png")
    return report
