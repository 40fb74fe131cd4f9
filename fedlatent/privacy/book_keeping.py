"""The clipped sum of per-record gradients in one forward and one backward pass ("book-keeping").

What: ``bk_clipped_sum`` computes the same vector as Opacus' DP optimizers clip and sum
(``sum_i g_i * min(1, C / (|g_i| + 1e-6))``) for models whose weights all sit in ``nn.Linear``,
``nn.Conv2d`` and affine ``nn.GroupNorm`` layers, each called once per forward pass
(``supports``). Forward hooks keep each layer's input; one ``autograd.grad`` gives the
gradient of the records' summed loss with respect to each layer's *output* (records are
independent, so row ``i`` is record ``i``'s own); from those:

- ``nn.Linear`` on ``(B, in)`` inputs: record ``i``'s weight-gradient norm is ``|a_i| |g_i|``
  (the gradient is the outer product ``g_i a_i^T``), never materialized;
- ``nn.Conv2d``: the per-record weight gradient ``g_i U_i^T`` from the unfolded input ``U_i``
  (small for the convolutions here: out-channels x in-channels x kernel);
- ``nn.GroupNorm``: ``sum(g_i * xhat_i)`` and ``sum(g_i)`` per channel, ``xhat`` recomputed.

Then each layer's clipped sum is one weighted matmul (``(f * g)^T a``) or contraction.

Why write it: Opacus' exact methods cost a second backward pass (ghost clipping) or hook
bookkeeping over materialized gradients (``GradSampleModule``); ``torch.func.vmap`` materializes
every record's full gradient, ~20-100x a plain step for the MLPs here. This is Bu et al.'s
book-keeping technique (2023, "Differentially Private Optimization on Large Model at Small
Cost"): backward to the layer outputs skips the weight gradients a plain backward computes, and
the clipped weighted sums take their place, so a DP step costs about a plain one. A test pins
its result to Opacus' for every model fedlatent trains.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

RecordLossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
CLIP_EPS = 1e-6  # Opacus' clip factor: C / (norm + 1e-6), at most 1
LAYERS = (nn.Linear, nn.Conv2d, nn.GroupNorm)


def weighted_layers(module: nn.Module) -> list[nn.Module]:
    """The submodules of ``module`` that hold a trainable parameter of their own, in ``modules()`` order."""
    return [m for m in module.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]


def supports(model: nn.Module) -> bool:
    """True when every trainable weight of ``model`` sits in a layer ``bk_clipped_sum`` handles."""
    for m in weighted_layers(model):
        if type(m) not in LAYERS:
            return False
        if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str)):
            return False
        if isinstance(m, nn.GroupNorm) and not m.affine:
            return False
    return True


def _per_record(module: nn.Module, a: torch.Tensor, g: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-record gradient pieces of one layer and each record's squared gradient norm over its weights.

    Returns ``(pieces, sq_norms)``; ``_clipped`` turns the pieces into clipped sums.
    """
    if isinstance(module, nn.Linear):
        if a.dim() == 2:  # ghost norm: |g_i a_i^T| = |g_i| |a_i|
            sq = torch.linalg.vector_norm(a, dim=1).square() * torch.linalg.vector_norm(g, dim=1).square()
            pieces = {"a": a, "g": g}
        else:  # (B, ..., in): materialize each record's sum over its positions
            gw = torch.einsum("b...o,b...i->boi", g, a)
            sq, pieces = gw.flatten(1).pow(2).sum(1), {"weight": gw}
            if module.bias is not None:
                pieces["g"] = g.flatten(1, -2).sum(1)
        if module.bias is not None:
            sq = sq + pieces["g"].pow(2).sum(1)
        return pieces, sq
    if isinstance(module, nn.Conv2d):
        padding = module.padding  # a tuple: ``supports`` refuses "same"/"valid"
        assert not isinstance(padding, str)
        unfolded = F.unfold(a, module.kernel_size, module.dilation, padding, module.stride)
        gw = torch.bmm(g.flatten(2), unfolded.transpose(1, 2))  # (B, out, in * kh * kw)
        pieces = {"weight": gw}
        sq = gw.flatten(1).pow(2).sum(1)
        if module.bias is not None:
            pieces["bias"] = g.flatten(2).sum(2)
            sq = sq + pieces["bias"].pow(2).sum(1)
        return pieces, sq
    assert isinstance(module, nn.GroupNorm)
    xhat = F.group_norm(a, module.num_groups, eps=module.eps)
    pieces = {"weight": (g * xhat).flatten(2).sum(2), "bias": g.flatten(2).sum(2)}
    return pieces, pieces["weight"].pow(2).sum(1) + pieces["bias"].pow(2).sum(1)


def _clipped(module: nn.Module, pieces: dict[str, torch.Tensor], factor: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{parameter name: sum_i factor_i * record i's gradient}`` of one layer."""
    if "a" in pieces:  # Linear on 2-D inputs: one matmul, as a plain backward's weight gradient
        fg = pieces["g"] * factor[:, None]
        out = {"weight": fg.T @ pieces["a"]}
        if getattr(module, "bias", None) is not None:
            out["bias"] = fg.sum(0)
        return out
    out = {}
    for name, piece in pieces.items():
        if name == "g":  # a Linear's bias on (B, ..., in) inputs
            out["bias"] = torch.einsum("b,bo->o", factor, piece)
        else:
            out[name] = torch.einsum("b,b...->...", factor, piece)
    return out


def bk_clipped_sum(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    record_loss_fn: RecordLossFn,
    max_grad_norm: float,
    layers: list[nn.Module] | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per trainable parameter (``parameters()`` order), the sum of records' gradients each clipped to C.

    Returns ``(sums, losses)``: the clipped sums and each record's (detached) loss. ``model``
    must satisfy ``supports`` and compute each record's loss independently of the others.
    ``layers`` (``weighted_layers(model)``, computed here when not given) saves a caller that
    steps many times the walk over the modules, a fifth of a small model's step.
    """
    layers = weighted_layers(model) if layers is None else layers
    taps: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]] = {m: [] for m in layers}

    def keep(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        taps[module].append((inputs[0].detach(), output))

    handles = [m.register_forward_hook(keep) for m in layers]
    try:
        losses = record_loss_fn(model, x, y)
    finally:
        for h in handles:
            h.remove()
    if any(len(t) != 1 for t in taps.values()):
        raise ValueError("book-keeping clipping needs every weighted layer called exactly once per forward pass")
    used = [m for m in layers if taps[m][0][1].requires_grad]
    grads = torch.autograd.grad(losses.sum(), [taps[m][0][1] for m in used])
    parts = {m: _per_record(m, taps[m][0][0], g) for m, g in zip(used, grads, strict=True)}  # g needs no grad
    sq = torch.zeros(len(x), dtype=losses.dtype)
    for _, s in parts.values():
        sq = sq + s
    factor = (max_grad_norm / (sq.sqrt() + CLIP_EPS)).clamp(max=1.0)
    sums: dict[int, torch.Tensor] = {}
    for m, (pieces, _) in parts.items():
        for name, total in _clipped(m, pieces, factor).items():
            param = getattr(m, name)
            sums[id(param)] = total.reshape(param.shape)
    params = [p for p in model.parameters() if p.requires_grad]
    return [sums[id(p)] if id(p) in sums else torch.zeros_like(p) for p in params], losses.detach()
