"""Outside fuzz of the real ServerApp: hostile nodes' replies on every reply path of a run.

What: ``fuzz(path, replies=..., seed=..., out=...)`` runs the real server code
(``server_app._run``: identify, encoder, federation, evaluation, export) again and again on a
stand-in Flower Grid (``FuzzGrid``) whose nodes are the real ClientApp, called in-process, until
``replies`` replies have reached the server. A minority of nodes are hostile: each of their
replies is, with probability ``rate``, changed by one mutation of ``fuzz_mutations`` (of the kinds
the reply admits, the one sent least so far: every kind is soon sent); every reply, hostile or honest, goes
through Flower's wire encoding. Each run is judged against the explicit oracle
(``fuzz_mutations.VALID``): (a) the run finishes (``results.json``); (b) every invalid reply is
in the server view's ``rejected`` list, with its reason; (c) no valid reply is; (d) the privacy
figures of ``results.json`` are each client's own (its ledger), whatever the replies claimed
(``fuzz_judge``).
``PATHS`` holds the seven reply paths, each a small RunConfig on ``digits``.

Why from the outside: the contract's tests feed it one reply at a time; only a whole run shows
whether a lie that passes one check is believed later (binding, ε, aggregation, export), or an
accepted value stops the run. The apps are loaded as Flower loads them (``in_process``).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from flwr.app import Context, Error, Message, RecordDict
from flwr.app.metadata import Metadata

from fedlatent.bench.fuzz_judge import Delivery, judge, privacy_problems, reason_class, verdict
from fedlatent.bench.fuzz_mutations import GENERIC, VALID, Facts, applicable, mutate, wire
from fedlatent.bench.in_process import load_apps, server_process
from fedlatent.config import RunConfig
from fedlatent.federation import payloads as P
from fedlatent.plan import make_plan
from fedlatent.privacy.ledger import Ledger

BASE: dict[str, Any] = {"dataset": "digits", "rounds": 3, "local-epochs": 1, "ae-epochs": 5, "server-epochs": 5,
                        "round-timeout": 60.0}  # fmt: skip
PATHS: dict[str, dict[str, Any]] = {
    "train-plain": {"mode": "raw"},
    "train-dp": {"mode": "raw", "epsilon": 3.0, "reproducible-noise": True},
    "client-level-dp": {"mode": "raw", "client-dp-noise": 0.5},
    "share-plain": {"mode": "latent-share", "encoder": "public"},
    "share-dp": {"mode": "latent-share", "encoder": "public", "epsilon": 3.0, "reproducible-noise": True},
    "evaluate-rounds": {"mode": "latent-fedavg", "encoder": "local"},  # each round's federated evaluation
    "final-evaluate": {"mode": "latent-share", "encoder": "local"},  # the evaluation after the rounds
}
QUERIES = {"query.identify": "identify", "query.set_encoder": "set-encoder",
           "query.local_encoder": "local-encoder", "query.share_latents": "share-latents"}  # fmt: skip
COUNTS = ("replies", "mutated", "crashes", "violations_accepted", "valid_refused", "unrecorded")


class HarnessError(RuntimeError):
    """The harness failed (a mutation Flower's wire cannot carry), not the server: the run is not judged."""


class FuzzGrid:
    """Flower's Grid as the server uses it (node ids, push, pull), answered by in-process ClientApps.

    Replies are ready as soon as the messages are pushed. At ``identify`` the honest nodes answer
    first: a partition is bound to the first node that claims it, so a thief answering before the
    owner would be believed by design; in every other exchange the replies come in a random order.
    """

    def __init__(self, cfg: RunConfig, client: ModuleType, *, hostile: int, rate: float, rng: np.random.Generator,
                 turns: Counter[str]) -> None:  # fmt: skip
        self.cfg, self.app, self.ledger_key, self.rate, self.rng, self.turns = (
            cfg, client.app, client.LEDGER_STATE, rate, rng, turns)  # fmt: skip
        ids = [int(i) + 1 for i in rng.choice(2**31, size=cfg.num_clients, replace=False)]
        self.partition = {node: pid for pid, node in enumerate(ids)}  # node -> partition
        self.hostile = {int(n) for n in rng.choice(ids, size=hostile, replace=False)}
        self.contexts = {node: Context(run_id=1, node_id=node, state=RecordDict(), run_config=cfg.to_run_config(),
                                       node_config={"partition-id": pid, "num-partitions": cfg.num_clients})
                         for node, pid in self.partition.items()}  # fmt: skip
        plan = make_plan(cfg)
        self.sizes, self.num_classes = [len(c) for c in plan.client_idx], plan.dataset.num_classes
        self.deliveries: list[Delivery] = []
        self.bound: set[int] = set()  # nodes with a valid reply delivered before this exchange
        self.client_errors: list[str] = []
        self._ready: list[Message] = []
        self._ids, self._round = itertools.count(), 0

    def get_node_ids(self) -> list[int]:
        return list(self.partition)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids: list[str] = []
        honest: list[Message] = []
        hostile: list[Message] = []
        for msg in messages:
            ids.append(mid := f"m{next(self._ids)}")
            (hostile if msg.metadata.dst_node_id in self.hostile else honest).extend(self._answer(msg, mid))
        self.bound |= {d.node for d in self.deliveries if d.kind in VALID}  # the oracle's binding: first valid reply
        if self.deliveries and self.deliveries[-1].phase == "identify":
            self._ready += honest + hostile
        else:
            self._ready += [(honest + hostile)[i] for i in self.rng.permutation(len(honest) + len(hostile))]
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        wanted = set(ids)
        out = [m for m in self._ready if m.metadata.reply_to_message_id in wanted]
        self._ready = [m for m in self._ready if m.metadata.reply_to_message_id not in wanted]
        return out

    def ledger(self, node: int) -> Ledger | None:
        """The node's own privacy ledger (its truth), if it took a private step."""
        state = self.contexts[node].state.config_records
        return Ledger.from_config(state[self.ledger_key]) if self.ledger_key in state else None

    def _phase(self, msg: Message) -> tuple[str, int]:
        kind = msg.metadata.message_type
        if kind in QUERIES:
            return QUERIES[kind], 0
        if kind == "train":
            config = P.config_of(msg)
            self._round = int(config["server-round"])  # type: ignore[arg-type]
            return str(config["phase"]), self._round
        # evaluate: each FedAvg round's federated evaluation, or latent-share's one after the rounds
        return ("evaluate", self._round) if self.cfg.mode == "latent-fedavg" else ("final-evaluate", self.cfg.rounds)

    def _answer(self, msg: Message, mid: str) -> list[Message]:
        """The node's replies to one message: honest, mutated, or the honest one twice."""
        node, (phase, rnd) = msg.metadata.dst_node_id, self._phase(msg)
        meta = Metadata(run_id=1, message_id=mid, src_node_id=0, dst_node_id=node, reply_to_message_id="",
                        group_id=msg.metadata.group_id, created_at=time.time(), ttl=msg.metadata.ttl,
                        message_type=msg.metadata.message_type)  # fmt: skip
        request = Message(content=wire(msg.content), metadata=meta)  # type: ignore[call-overload]
        try:
            reply = self.app(request, self.contexts[node])
        except Exception as err:  # noqa: BLE001 - an honest client's failure is a finding, not the harness's end
            self.client_errors.append(f"{phase} r{rnd} node {node}: {type(err).__name__}: {err}"[:300])
            self.deliveries.append(Delivery(phase, rnd, node, "client-error"))
            return [Message(Error(code=1, reason=str(err)), reply_to=request)]
        kinds, facts = ["honest"], None
        if node in self.hostile and self.rng.random() < self.rate:
            allowed = applicable(reply.content, facts := self._facts(node, request))
            kinds = [min(allowed, key=lambda k: (self.turns[k], k in GENERIC))]  # least sent so far; rarer first
            self.turns[kinds[0]] += 1
        if kinds == ["duplicate"]:
            kinds = ["honest", "duplicate"]
        self.deliveries += [Delivery(phase, rnd, node, kind) for kind in kinds]
        try:
            bodies = [mutate(k, reply.content, facts, self.rng) if facts and k != "duplicate" else reply.content
                      for k in kinds]  # fmt: skip
            return [Message(b, reply_to=request) if isinstance(b, Error) else Message(wire(b), reply_to=request)
                    for b in bodies]  # fmt: skip
        except Exception as err:  # a mutation no client could send (Flower's wire refuses it): not the server's
            raise HarnessError(f"{kinds} of a {phase} reply: {type(err).__name__}: {err}") from err

    def _facts(self, node: int, request: Message) -> Facts:
        bound = [n for n in self.partition if n != node and (n not in self.hostile or n in self.bound)]
        others = [n for n in self.partition if n != node] if node in self.bound else bound
        ledger = self.ledger(node)
        one = _one_event(ledger.delta, ledger.accountant, ledger.history[-1], tuple(ledger.pure[-1:])) \
            if ledger and ledger.history else 0.0  # fmt: skip
        sent = P.record_numpy(P.arrays(request.content)) if request.metadata.message_type == "train" else None
        targets = {self.partition[n]: self.sizes[self.partition[n]] for n in others}
        return Facts(partitions=len(self.sizes), num_classes=self.num_classes, others=targets, sent=sent,
                     epsilon_one=one, bounded=self.cfg.dp or self.cfg.encoder != "local")  # fmt: skip


@functools.lru_cache(maxsize=64)
def _one_event(delta: float, accountant: str, event: tuple[float, float, int], pure: tuple[float, ...]) -> float:
    """ε of one DP event alone (a claim below it is a lie whatever else the client did)."""
    return Ledger(budget=math.inf, delta=delta, accountant=accountant, history=[event], pure=list(pure)).spent()


def honest_run(cfg: RunConfig, out: Path, *, seed: int) -> FuzzGrid:
    """One run of the real server code into ``out`` with honest in-process clients (node ids from ``seed``)."""
    server, client = load_apps()
    grid = FuzzGrid(cfg, client, hostile=0, rate=0.0, rng=np.random.default_rng(seed), turns=Counter())
    with server_process():
        server._run(grid, cfg, sorted(grid.partition), out)
    return grid


def fuzz(path: str, *, replies: int, seed: int, out: Path, clients: int = 6, hostile: int = 2,
         rate: float = 0.8) -> dict[str, Any]:  # fmt: skip
    """Run ``path`` (a key of ``PATHS``) until ``replies`` replies reached the server; the tally.

    Parameters
    ----------
    path : str
        Which reply path (``PATHS``).
    replies : int
        Replies to deliver in all; runs of ``clients`` nodes follow one another until then.
    seed : int
        Seed of the runs' config (one for all: the caches serve every run) and of the node ids, the
        hostile nodes and the mutations (drawn anew for each run).
    out : Path
        Where the run directories go (``run-<k>/``, with their ``server_view/``).
    clients, hostile, rate : int, int, float
        Nodes per run, how many of them are hostile, and the chance that a hostile reply is changed.

    Returns
    -------
    dict
        Counts (``replies``, ``mutated``, ``crashes``, ``violations_accepted``, ``valid_refused``,
        ``unrecorded``), the ``identify`` replies apart, ``privacy`` (d), and by mutation ``kinds``:
        sent, accepted, refused and the reasons; ``failures`` names the first problems found.
    """
    server, client = load_apps()
    total: Counter[str] = Counter()
    ident: Counter[str] = Counter()
    kinds: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    turns: Counter[str] = Counter()
    start, run = time.time(), 0
    with server_process():
        while total["replies"] < replies:
            overrides = {**BASE, **PATHS[path], "num-clients": clients, "seed": seed, "cache-dir": str(out / "cache")}
            cfg = RunConfig.from_run_config(overrides)
            grid = FuzzGrid(cfg, client, hostile=hostile, rate=rate, rng=np.random.default_rng([seed, run]),
                            turns=turns)  # fmt: skip
            run_dir = out / f"run-{run:03d}"
            crashed = ""
            try:
                server._run(grid, cfg, sorted(grid.partition), run_dir)
            except HarnessError:
                raise
            except Exception as err:  # noqa: BLE001 - (a): a crash is what the fuzz counts
                total["crashes"] += 1
                failures.append(crashed := f"run {run}: crash {type(err).__name__}: {err}"[:400])
            fates, stray = judge(run_dir / "server_view", grid.deliveries)
            failures += [f"run {run}: rejection of no delivered reply {s}" for s in stray]
            failures += [f"run {run}: honest client failed: {e}" for e in grid.client_errors]
            for d, fate, reason in fates:
                valid, bad = d.kind in VALID, verdict(d.kind, fate)
                for counts in (total, ident) if d.phase == "identify" else (total,):
                    counts.update(["replies"] + (["mutated"] if d.kind != "honest" else []) + ([bad] if bad else []))
                entry = kinds.setdefault(d.kind, {"valid": valid, "sent": 0, "accepted": 0, "refused": 0,
                                                  "unrecorded": 0, "reasons": Counter()})  # fmt: skip
                entry["sent"] += 1
                entry[fate] += 1
                if reason:
                    entry["reasons"][reason_class(reason)] += 1
                if bad:
                    failures.append(f"run {run}: {bad}: {d} -> {fate} {reason}"[:400])
            if (results_file := run_dir / "results.json").is_file():
                ledgers = {pid: grid.ledger(node) for node, pid in grid.partition.items()}
                problems, over = privacy_problems(cfg, json.loads(results_file.read_text()), ledgers)
                total.update({"privacy_checked": 1, "privacy_problems": len(problems), "privacy_over_reported": over})
                failures += [f"run {run}: privacy: {p}" for p in problems]
            elif not crashed:
                failures.append(f"run {run}: no results.json")
            run += 1
    return {
        "path": path, "config": {**BASE, **PATHS[path], "num-clients": clients}, "runs": run,
        "hostile": hostile, "rate": rate, "seconds": round(time.time() - start, 1),
        **{k: total[k] for k in COUNTS},
        "identify": {k: ident[k] for k in COUNTS if k != "crashes"},
        "privacy": {k.removeprefix("privacy_"): total[k] for k in ("privacy_checked", "privacy_problems",
                                                                     "privacy_over_reported")},
        "kinds": {k: {**v, "reasons": dict(v["reasons"].most_common())} for k, v in sorted(kinds.items())},
        "failures": failures[:50],
    }  # fmt: skip
