"""Exact per-record clipping for DP-SGD: three ways to the same clipped sum, and which one a model takes.

What: ``METHODS`` maps a name to a ``Clipper`` factory. ``with clipper(model, loss_fn, C) as clip``
gives ``clip(x, y) -> (sums, losses)``: per trainable parameter (``parameters()`` order) the sum
of the records' gradients each clipped to L2 norm ``C`` with Opacus' factor
``min(1, C / (norm + 1e-6))``, and each record's loss. ``dp_sgd.dp_fit`` adds the noise.

- ``book-keeping`` (``book_keeping.py``): one forward and one backward pass; Linear, Conv2d and
  GroupNorm weights only. The default wherever it applies (``method_for``), but a convnet's
  largest batches.
- ``ghost``: Opacus' fast-gradient/ghost clipping (two backward passes); any model Opacus
  supports, e.g. the conv autoencoder's transposed convolutions.
- ``vmap``: ``torch.func`` per-record gradients (``per_sample.py``): a convnet's largest batches.

Why a registry: ``fedlatent bench``'s ``dp_step`` part times every method on every model at the
sweeps' batch sizes, and a test pins each to per-record gradients computed one by one; the
choice in ``method_for`` follows those timings (docs/privacy.md has the table).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping
from torch import nn

from fedlatent.privacy.book_keeping import RecordLossFn, bk_clipped_sum, supports, weighted_layers
from fedlatent.privacy.per_sample import clipped_grad_sum

Clip = Callable[[torch.Tensor, torch.Tensor], tuple[list[torch.Tensor], torch.Tensor]]
Clipper = Callable[[nn.Module, RecordLossFn, float], contextlib.AbstractContextManager[Clip]]
_OPACUS_PARAM_ATTRS = ("grad_sample", "summed_grad", "_norm_sample", "_forward_counter", "_current_grad_sample")


@contextlib.contextmanager
def book_keeping(model: nn.Module, loss_fn: RecordLossFn, max_grad_norm: float) -> Iterator[Clip]:
    """One forward and one backward pass per batch (``book_keeping.bk_clipped_sum``)."""
    layers = weighted_layers(model)
    yield lambda x, y: bk_clipped_sum(model, x, y, record_loss_fn=loss_fn, max_grad_norm=max_grad_norm, layers=layers)


@contextlib.contextmanager
def vmap(model: nn.Module, loss_fn: RecordLossFn, max_grad_norm: float) -> Iterator[Clip]:
    """``torch.func`` per-record gradients, chunked (``per_sample.clipped_grad_sum``)."""
    yield lambda x, y: clipped_grad_sum(model, x, y, record_loss_fn=loss_fn, max_grad_norm=max_grad_norm)


@contextlib.contextmanager
def ghost(model: nn.Module, loss_fn: RecordLossFn, max_grad_norm: float) -> Iterator[Clip]:
    """Opacus' ghost clipping, its noise set to 0 (``dp_fit`` adds the noise for every method).

    ``model`` is wrapped for the duration of the block; afterwards Opacus' hooks and parameter
    attributes are gone and ``model`` is a plain module again.
    """
    wrapped = GradSampleModuleFastGradientClipping(model, max_grad_norm=max_grad_norm, use_ghost_clipping=True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = DPOptimizerFastGradientClipping(
        torch.optim.SGD(params, lr=0.0),
        noise_multiplier=0.0,
        max_grad_norm=max_grad_norm,
        expected_batch_size=1,
    )

    def clip(x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        optimizer.zero_grad()
        optimizer.expected_batch_size = len(x)  # Opacus' "mean" reduction: undone below
        losses = loss_fn(wrapped, x, y)
        # Opacus' hooks see inputs that need no gradient (data); torch warns, harmlessly.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
            DPTensorFastGradientClipping(wrapped, optimizer, losses, "mean").backward()
        optimizer.pre_step()  # p.grad = (the clipped sum + zero noise) / len(x)
        return [p.grad.detach() * len(x) for p in params], losses.detach()  # type: ignore[union-attr]

    try:
        wrapped.train()
        yield clip
    finally:
        optimizer.zero_grad(set_to_none=True)
        wrapped.to_standard_module()
        for p in model.parameters():
            for attr in _OPACUS_PARAM_ATTRS:
                if hasattr(p, attr):
                    delattr(p, attr)


METHODS: dict[str, Clipper] = {"book-keeping": book_keeping, "ghost": ghost, "vmap": vmap}


# From this expected batch on, a convnet takes vmap: book-keeping materializes each convolution's
# per-record weight gradient from its unfolded input, and at ~2,000 records that memory traffic
# costs more than vmap's per-record gradients of these small convnets (measured at 203 and 2,028).
LARGE_CONV_BATCH = 1024


def method_for(model: nn.Module, batch_size: int | None = None) -> str:
    """The fastest exact method for ``model`` at ``batch_size`` (docs/privacy.md has the timings).

    Book-keeping where it applies, but vmap for a convnet from ``LARGE_CONV_BATCH`` records;
    Opacus' ghost clipping for what book-keeping does not handle.
    """
    if not supports(model):
        return "ghost"
    convnet = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return "vmap" if convnet and batch_size is not None and batch_size >= LARGE_CONV_BATCH else "book-keeping"
