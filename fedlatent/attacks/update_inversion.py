"""Inverting a multi-step local update (Geiping et al. 2020, "inverting FedAvg updates").

What: a client uploads its weights after ``k`` optimizer steps on its records, not one
gradient. ``invert_update`` optimises dummy inputs so that ``k`` steps of the *same* optimizer
(Adam or SGD, the client's public learning rate) started from the weights the server sent move
them in the direction the real upload moved (cosine between ``start - simulated`` and
``start - upload``). The ``k`` simulated steps are unrolled and differentiated through
(``torch.func.functional_call`` on a copy of the parameters), so the attack models what the
single-step matching of ``attacks.gradient`` treats as one gradient.

Why unrolled rather than averaged: the literature reports that averaging over steps or records
"does not protect" (Geiping et al. 2020; Dimitrov et al. 2022 recover over 45% of FEMNIST images
from 10 local epochs); a fair attacker simulates the optimizer it knows the clients run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call

from fedlatent.attacks.common import total_variation

Params = dict[str, torch.Tensor]


def _adam(lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> Callable[..., Params]:
    """One differentiable Adam step (bias-corrected, as ``torch.optim.Adam``); keeps its moments in ``state``."""

    def step(params: Params, grads: Params, state: dict[str, Params], t: int) -> Params:
        m = {k: betas[0] * state["m"].get(k, torch.zeros_like(g)) + (1 - betas[0]) * g for k, g in grads.items()}
        v = {k: betas[1] * state["v"].get(k, torch.zeros_like(g)) + (1 - betas[1]) * g * g for k, g in grads.items()}
        state["m"], state["v"] = m, v
        c1, c2 = 1 - betas[0] ** t, 1 - betas[1] ** t
        # + 1e-30 under the root: its derivative at v = 0 (a weight with no gradient) stays finite.
        return {k: p - lr * (m[k] / c1) / (torch.sqrt(v[k] / c2 + 1e-30) + eps) for k, p in params.items()}

    return step


def _sgd(lr: float) -> Callable[..., Params]:
    def step(params: Params, grads: Params, state: dict[str, Params], t: int) -> Params:
        return {k: p - lr * grads[k] for k, p in params.items()}

    return step


def simulate(
    model: nn.Module,
    start: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    local_steps: int,
    local_lr: float,
    optimizer: Literal["adam", "sgd"] = "adam",
    create_graph: bool = True,
) -> Params:
    """The weights after ``local_steps`` full-batch steps on ``(x, y)`` from ``start`` (differentiable in ``x``)."""
    step = _adam(local_lr) if optimizer == "adam" else _sgd(local_lr)
    # Leaves that require grad: the local gradients are taken with respect to them.
    params = {k: v if v.requires_grad else v.detach().requires_grad_(True) for k, v in start.items()}
    state: dict[str, Params] = {"m": {}, "v": {}}
    for t in range(1, local_steps + 1):
        loss = nn.functional.cross_entropy(functional_call(model, params, (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
        params = step(params, dict(zip(params, grads, strict=True)), state, t)
    return params


def invert_update(
    model: nn.Module,
    start: Params,
    upload: Params,
    *,
    input_shape: tuple[int, ...],
    labels: torch.Tensor,
    local_steps: int,
    local_lr: float,
    optimizer: Literal["adam", "sgd"] = "adam",
    steps: int = 300,
    lr: float = 0.1,
    tv: float = 0.0,
    bounded: bool = True,
    generator: torch.Generator,
) -> torch.Tensor:
    """Inputs (one per label) whose simulated local update points where ``start - upload`` does.

    ``start`` and ``upload`` map ``model.named_parameters()`` names to tensors. Returns
    ``(len(labels), *input_shape)`` inputs, in [0, 1] when ``bounded`` (images).
    """
    model.eval()
    start = {k: v.detach().float() for k, v in start.items()}
    target = {k: start[k] - upload[k].detach().float() for k in start}
    norm_t = torch.sqrt(sum((t**2).sum() for t in target.values()))  # type: ignore[arg-type]
    u = torch.randn((len(labels), *input_shape), generator=generator).requires_grad_(True)
    opt = torch.optim.Adam([u], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))

    def inputs() -> torch.Tensor:
        return torch.sigmoid(u) if bounded else u

    for _ in range(steps):
        x = inputs()
        final = simulate(model, start, x, labels, local_steps=local_steps, local_lr=local_lr, optimizer=optimizer)
        moved = {k: start[k] - final[k] for k in start}
        dot = sum((moved[k] * target[k]).sum() for k in start)
        norm_m = torch.sqrt(sum((m**2).sum() for m in moved.values()))  # type: ignore[arg-type]
        objective = 1.0 - dot / (norm_m * norm_t + 1e-12)
        if tv > 0 and bounded:
            objective = objective + tv * total_variation(x).mean()
        (grad,) = torch.autograd.grad(objective, [u])
        u.grad = grad
        opt.step()
        schedule.step()
    return inputs().detach().clone()
