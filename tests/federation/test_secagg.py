"""The SecAgg+ plumbing without a federation: the client's mod gate and share, the server's accounting."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app.metadata import Metadata

from fedlatent.config import RunConfig
from fedlatent.federation import secagg_client as S
from fedlatent.federation.secagg import workflow_for
from fedlatent.plan import build_classifier, make_plan
from fedlatent.privacy.ledger import BudgetExhausted, Ledger
from fedlatent.secure_plan import distributed_plan, secure_privacy

pytestmark = [pytest.mark.filterwarnings("ignore:Optimal order is the")]

CFG = RunConfig.from_run_config({
    "dataset": "digits", "num-clients": 4, "mode": "raw", "epsilon": 3.0, "dp-mode": "distributed",
    "secagg": True, "secagg-max-dropouts": 1, "rounds": 6, "batch-size": 200,
})  # fmt: skip


def _message(content: RecordDict, message_type: str = "train") -> Message:
    meta = Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=1, reply_to_message_id="", group_id="1",
                    created_at=time.time(), ttl=60.0, message_type=message_type)  # fmt: skip
    return Message(content=content, metadata=meta)


def _context() -> Context:
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})


def test_the_mod_runs_only_on_secure_rounds(monkeypatch):
    calls = []
    monkeypatch.setattr(S, "secaggplus_mod", lambda msg, ctx, nxt: calls.append("mod") or nxt(msg, ctx))

    def handler(msg: Message, ctx: Context) -> Message:
        calls.append("handler")
        return msg

    S.secagg_when_asked(_message(RecordDict({"config": ConfigRecord()})), _context(), handler)
    S.secagg_when_asked(_message(RecordDict({S.SECAGG_CONFIGS: ConfigRecord()}), "query.identify"), _context(), handler)
    assert calls == ["handler", "handler"]  # plain FedAvg and queries pass untouched
    S.secagg_when_asked(_message(RecordDict({S.SECAGG_CONFIGS: ConfigRecord()})), _context(), handler)
    assert calls[2:] == ["mod", "handler"]


def _secure_message(model: torch.nn.Module, rnd: int = 1) -> Message:
    arrays = ArrayRecord([v.detach().numpy() for v in model.state_dict().values()])
    content = RecordDict({S.FITINS_PARAMETERS: arrays, S.FITINS_CONFIG: ConfigRecord({"server-round": rnd})})
    return _message(content)


def test_the_share_is_a_legacy_fit_result_and_its_round_is_charged_once():
    plan = make_plan(CFG)
    dplan = distributed_plan(CFG, plan)
    model = build_classifier(CFG, plan.dataset)
    msg = _secure_message(model)
    assert S.is_secure_round(msg) and S.secure_config(msg)["server-round"] == 1
    ledger = Ledger(budget=CFG.epsilon, delta=CFG.delta)
    reply, ledger = S.distributed_reply(msg, cfg=CFG, plan=plan, pid=2, ledger=ledger,
                                        inputs=lambda: plan.client(2)[0])  # fmt: skip
    share = reply.content.array_records["fitres.parameters"]["0"].numpy()
    assert share.dtype == np.int64 and share.shape == (dplan.dim,) and np.abs(share).max() <= dplan.bound
    assert reply.content.metric_records["fitres.num_examples"]["num_examples"] == 1
    assert reply.content.config_records["fitres.metrics"]["partition-id"] == 2
    assert len(ledger.skellam) == 1 and ledger.skellam[0] == dplan.round_of(dplan.min_survivors)
    spent = ledger.skellam * dplan.rounds
    full = Ledger(budget=CFG.epsilon, delta=CFG.delta, skellam=spent)
    with pytest.raises(BudgetExhausted):  # a round beyond the plan is refused before anything is computed
        S.distributed_reply(msg, cfg=CFG, plan=plan, pid=2, ledger=full, inputs=lambda: 1 / 0)


def test_a_model_of_another_shape_is_refused():
    plan = make_plan(CFG)
    wrong = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match="model sent"):
        S.ordered_model(CFG, plan, _secure_message(wrong).content.array_records[S.FITINS_PARAMETERS])


def test_the_servers_epsilon_comes_from_its_own_record_of_each_round():
    plan = make_plan(CFG)
    dplan = distributed_plan(CFG, plan)
    rounds = {1: [0, 1, 2, 3], 2: [0, 1, 2], 3: [0, 1, 3]}
    out = secure_privacy(CFG, plan, rounds)
    assert out["epsilon_per_client"]["0"] == pytest.approx(dplan.epsilon([4, 3, 3], delta=CFG.delta))
    assert out["epsilon_per_client"]["2"] == pytest.approx(dplan.epsilon([4, 3], delta=CFG.delta))
    assert out["epsilon"] == out["epsilon_per_client"]["0"] < out["epsilon_local"]
    assert out["secagg"]["survivors_per_round"] == [4, 3, 3] and out["secagg"]["min_survivors"] == 3
    # The full plan with the minimum of survivors every round costs at most the budget.
    assert secure_privacy(CFG, plan, dict.fromkeys(range(1, 7), [0, 1, 2]))["epsilon"] <= CFG.epsilon


def test_the_workflow_takes_all_clients_as_its_graph_and_refuses_an_overflowing_range():
    wf = workflow_for(clients=4, threshold=4, bound=1000, timeout=30.0)
    assert wf.num_shares == 4 and wf.reconstruction_threshold == 1.0 and wf.quantization_range == 2000
    assert workflow_for(clients=4, threshold=3, bound=1000, timeout=30.0).reconstruction_threshold == 3
    with pytest.raises(ValueError, match="2\\*\\*32"):
        workflow_for(clients=4, threshold=3, bound=2**30, timeout=30.0)
    with pytest.raises(ValueError, match="at least 3"):
        workflow_for(clients=2, threshold=2, bound=10, timeout=30.0)
    assert math.isfinite(dataclasses.replace(CFG).epsilon)
