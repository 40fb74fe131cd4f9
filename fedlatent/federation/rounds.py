"""How the server reaches the nodes: one exchange of messages, a broadcast, and the FedAvg round loop.

``exchange`` sends messages and pulls their replies for at most ``round-timeout`` seconds,
logging progress and naming silent nodes (Flower's ``send_and_receive`` does the same silently,
polling every 3 s; with 1,000 clients a broadcast takes minutes). A node that misses a deadline
is left out of the rest of the run (``RunContext.silent``): Flower lists a dead SuperNode as
online until its heartbeats have been missing for a minute or more, and waiting a whole
``round-timeout`` for it in every round would multiply the cost of one dead node. ``fedavg_rounds`` is the round
loop of ``Strategy.start`` with what a checkpointed run needs and ``start`` lacks: it starts at
any round (a resumed run continues at k + 1), calls back after every round (the checkpoint),
and bounds every wait by ``round-timeout``. The strategy's own methods (``configure_train``,
``aggregate_train``, ``configure_evaluate``, ``aggregate_evaluate``) do the work as in
``start``, so wrappers such as Flower's client-level DP act unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp.strategy import Strategy

from fedlatent.federation import payloads as P
from fedlatent.federation.context import RunContext
from fedlatent.learning.progress import Progress

log = logging.getLogger("fedlatent")


def exchange(run: RunContext, messages: Iterable[Message], name: str, *, poll: float = 0.5) -> list[Message]:
    """Send ``messages``, return the replies that came within ``round-timeout`` s; name the silent nodes."""
    messages = list(messages)
    replies: list[Message] = []
    deadline = time.monotonic() + run.cfg.round_timeout
    sent = dict(zip(run.grid.push_messages(messages), [m.metadata.dst_node_id for m in messages], strict=True))
    pending = set(sent)
    progress = Progress(name, len(pending), unit="replies", after=10)
    while pending and time.monotonic() < deadline:
        pulled = list(run.grid.pull_messages(pending))
        replies += pulled
        pending -= {m.metadata.reply_to_message_id for m in pulled}
        if pulled:
            progress(len(replies))
        if pending:
            time.sleep(poll)
    if silent := sorted(sent[m] for m in pending):
        log.warning("%s: no reply from node(s) %s within round-timeout=%gs; left out for the rest of the run",
                    name, silent, run.cfg.round_timeout)  # fmt: skip
        run.silent.update(silent)
    return replies


def broadcast(run: RunContext, message_type: str, content: RecordDict) -> list[Message]:
    """Send one body (stamped with the run key) to every live node of the run; return the replies."""
    name = message_type.removeprefix("query.")
    content[P.CONFIG] = run.stamp(content.config_records.get(P.CONFIG, ConfigRecord()))
    alive = set(run.grid.get_node_ids()) - run.silent
    nodes = [n for n in run.nodes if n in alive]
    messages = run.traffic.sent(Message(content=content, message_type=message_type, dst_node_id=n) for n in nodes)
    with run.record.timed(name):
        return exchange(run, messages, name)


def identify(run: RunContext) -> None:
    """Ask every node for its partition once, so that seeded sampling draws partitions, not node ids."""
    for m in broadcast(run, P.Q_IDENTIFY, RecordDict({P.CONFIG: ConfigRecord()})):
        run.inbox.accept(m, phase="identify", rnd=0)


def fedavg_rounds(
    run: RunContext,
    strategy: Strategy,
    *,
    name: str,
    arrays: ArrayRecord,
    rounds: range,
    after_round: Callable[[int, ArrayRecord], None],
) -> ArrayRecord:
    """Run ``rounds`` of ``strategy`` from the global model ``arrays``; return the last global model."""
    for rnd in rounds:
        log.info("[ROUND %d/%d] %s", rnd, rounds.stop - 1, name)
        train = strategy.configure_train(rnd, arrays, run.stamp(ConfigRecord()), run.grid)
        new, _ = strategy.aggregate_train(rnd, exchange(run, train, f"{name} round {rnd}"))
        if new is not None:
            arrays = new
        if evaluation := list(strategy.configure_evaluate(rnd, arrays, run.stamp(ConfigRecord()), run.grid)):
            strategy.aggregate_evaluate(rnd, exchange(run, evaluation, f"evaluate round {rnd}"))
        after_round(rnd, arrays)
    return arrays
