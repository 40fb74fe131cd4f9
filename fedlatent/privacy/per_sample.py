"""The clipped sum of per-record gradients, by ``torch.func`` (vmap over grad), in bounded memory.

What: ``clipped_grad_sum(model, x, y, record_loss_fn=..., max_grad_norm=C)`` returns, for each
trainable parameter, ``sum_i g_i * min(1, C / (|g_i| + 1e-6))`` where ``g_i`` is record ``i``'s
gradient and ``|g_i|`` its L2 norm over all parameters: exactly the vector Opacus' DP optimizers
add their noise to (same clip-factor formula, so a test pins the two to float tolerance).

Why: DP-SGD's cost is the per-record norm. Opacus offers two exact ways: materializing every
record's gradient through module hooks, and ghost clipping (norms from activations and output
gradients, then a second backward pass of the reweighted loss). For the small models fedlatent
trains, ``torch.func.vmap`` over single records is the simplest exact way, and the one the
issue's measurements started from: it materializes every record's gradient, which for the MLPs
costs 20-100x a plain step (``fedlatent bench``); ``clipping.method_for`` picks it only for the
convnets' largest batches, where it is the fastest. Records are
processed in chunks so that a chunk's per-record gradients stay under ``max_floats`` floats
(a batch of 2,048 records of a 235k-parameter MLP would otherwise hold 1.9 GB).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedlatent.privacy.book_keeping import CLIP_EPS, RecordLossFn


class _Bound(nn.Module):
    """``model`` and its per-record loss as one module, so ``functional_call`` can swap the weights."""

    def __init__(self, model: nn.Module, record_loss_fn: RecordLossFn) -> None:
        super().__init__()
        self.model = model
        self.record_loss_fn = record_loss_fn

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.record_loss_fn(self.model, x, y)


def clipped_grad_sum(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    record_loss_fn: RecordLossFn,
    max_grad_norm: float,
    max_floats: int = 1 << 24,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per trainable parameter, the sum of the records' gradients each clipped to ``max_grad_norm``.

    Returns ``(sums, losses)``: one tensor per trainable parameter of ``model`` (in
    ``parameters()`` order) and each record's loss (detached), for the caller's bookkeeping.
    ``model`` must be batch-independent (no BatchNorm): a record's loss is computed alone.
    """
    bound = _Bound(model, record_loss_fn)
    names = [n for n, p in bound.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in bound.named_parameters() if p.requires_grad}
    frozen = {n: p.detach() for n, p in bound.named_parameters() if not p.requires_grad}
    frozen |= dict(bound.named_buffers())

    def one(weights: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss = functional_call(bound, (weights, frozen), (xi.unsqueeze(0), yi.unsqueeze(0))).sum()
        return loss, loss.detach()  # the gradient's target, and the loss itself as an auxiliary output

    per_record = vmap(grad(one, has_aux=True), in_dims=(None, 0, 0))
    size = sum(p.numel() for p in params.values())
    chunk = max(1, max_floats // max(size, 1))
    sums = [torch.zeros_like(params[n]) for n in names]
    losses = []
    for start in range(0, len(x), chunk):
        xc, yc = x[start : start + chunk], y[start : start + chunk]
        grads, chunk_losses = per_record(params, xc, yc)
        norms = torch.sqrt(sum(grads[n].flatten(1).pow(2).sum(1) for n in names))
        factor = (max_grad_norm / (norms + CLIP_EPS)).clamp(max=1.0)
        for total, n in zip(sums, names, strict=True):
            total += torch.einsum("b,b...->...", factor, grads[n])
        losses.append(chunk_losses)
    return sums, torch.cat(losses) if losses else torch.zeros(0)
