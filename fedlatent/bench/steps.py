"""What one DP-SGD step costs beside a plain step, per model, batch size and clipping method.

What: ``dp_step_table()`` times, for each of the project's classifiers (``MODELS``) at the
batch sizes the shipped sweeps use (``BATCHES``), one plain step (mean loss, one backward
pass, optimizer step) and one DP-SGD step by every exact clipping method of
``privacy.clipping.METHODS`` (clipped sum, Gaussian noise, optimizer step, as ``dp_fit``
does it). Each row gives the median seconds per step and the ratio to plain, and says which
method ``method_for`` picks for that model. ``noise`` times drawing the step's Gaussian noise
alone: ``1 + noise ÷ plain`` is the floor of any exact method, since every DP-SGD step draws
one Gaussian per parameter (about 4 ns each on one core here, as much as a plain step of the
235k-parameter image MLP at batch 32).

Why medians of interleaved repetitions: on a shared 2-core machine a background process can
slow one stretch of time by 2x; timing every variant in turn within each repetition puts
such a stretch on all of them alike, and the median drops the stretches that hit one.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from fedlatent.learning.models import ImageClassifier, LatentClassifier
from fedlatent.learning.seeding import seeded_init
from fedlatent.learning.training import classification_losses, make_optimizer
from fedlatent.privacy.clipping import METHODS, method_for
from fedlatent.privacy.dp_sgd import set_noisy_grads

SCATTER_DIM = 81 * 7 * 7  # ScatterNet (J = 2, L = 8) features of a 28 x 28 image: what its linear model sees


def _image(arch: str) -> Callable[[], tuple[nn.Module, tuple[int, ...]]]:
    return lambda: (ImageClassifier(image_shape=(1, 28, 28), num_classes=10, arch=arch), (1, 28, 28))


def _latent(dim: int, hidden: tuple[int, ...]) -> Callable[[], tuple[nn.Module, tuple[int, ...]]]:
    return lambda: (LatentClassifier(latent_dim=dim, num_classes=10, hidden=hidden), (dim,))


# Every classifier a shipped sweep trains with DP-SGD (28 x 28 images, 10 classes).
MODELS: dict[str, Callable[[], tuple[nn.Module, tuple[int, ...]]]] = {
    "image-mlp": _image("mlp"),
    "cnn": _image("cnn"),
    "tanh-cnn": _image("tanh-cnn"),
    "latent-mlp": _latent(32, (256, 128)),
    "scatter-linear": _latent(SCATTER_DIM, ()),
}
# 32: the default batch; 203 and 2,028: the fair raw recipe's per-client and one-client batches.
BATCHES = (32, 203, 2028)
Step = Callable[[torch.Tensor, torch.Tensor], None]


def _plain_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> Step:
    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer.zero_grad()
        classification_losses(model, x, y).mean().backward()
        optimizer.step()

    return step


def _dp_step(clip: Any, model: nn.Module, optimizer: torch.optim.Optimizer) -> Step:
    params = [p for p in model.parameters() if p.requires_grad]
    buffer = torch.zeros(sum(p.numel() for p in params))

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        sums, _ = clip(x, y)
        set_noisy_grads(params, sums, std=1.0, expected=len(x), buffer=buffer, generator=None)
        optimizer.step()

    return step


def _noise(model: nn.Module) -> Step:
    buffer = torch.zeros(sum(p.numel() for p in model.parameters() if p.requires_grad))

    def draw(x: torch.Tensor, y: torch.Tensor) -> None:
        buffer.normal_(0.0, 1.0)

    return draw


def time_steps(
    model_name: str, batch: int, *, methods: Sequence[str] = tuple(METHODS), reps: int = 5, steps: int = 3
) -> dict[str, Any]:
    """Median seconds per step of plain training and of each clipping method; ratios to plain."""
    with seeded_init(0):
        model, shape = MODELS[model_name]()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand((batch, *shape), generator=gen), torch.randint(10, (batch,), generator=gen)
    times: dict[str, list[float]] = {"plain": [], "noise": [], **{m: [] for m in methods}}
    with contextlib.ExitStack() as stack:
        variants: dict[str, Step] = {}
        for name in times:
            own = copy.deepcopy(model)  # each variant its own weights and optimizer state
            optimizer = make_optimizer(list(own.parameters()), kind="sgd", lr=1e-3, momentum=0.9)
            if name == "plain":
                variants[name] = _plain_step(own, optimizer)
            elif name == "noise":
                variants[name] = _noise(own)
            else:
                clip = stack.enter_context(METHODS[name](own, classification_losses, 1.0))
                variants[name] = _dp_step(clip, own, optimizer)
        for step in variants.values():  # warm-up: first calls allocate and trace
            step(x, y)
        for _ in range(reps):
            for name, step in variants.items():
                start = time.perf_counter()
                for _ in range(steps):
                    step(x, y)
                times[name].append((time.perf_counter() - start) / steps)
    median = {name: statistics.median(t) for name, t in times.items()}
    return {
        "model": model_name, "batch": batch, "params": sum(p.numel() for p in model.parameters()),
        "chosen": method_for(model, batch), "seconds": median,
        "ratio": {m: median[m] / median["plain"] for m in ("noise", *methods)},
    }  # fmt: skip


def dp_step_table(
    models: Sequence[str] = tuple(MODELS),
    batches: Sequence[int] = BATCHES,
    *,
    reps: int = 5,
    echo: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """``time_steps`` for every model and batch size; one row each, in order."""
    rows = []
    for name in models:
        for batch in batches:
            row = time_steps(name, batch, reps=reps)
            rows.append(row)
            ratios = ", ".join(f"{m} {r:.2f}" for m, r in row["ratio"].items())
            echo(f"bench: dp step {name} batch {batch}: {ratios} plain steps (uses {row['chosen']})")
    return rows


def markdown_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the DP-step table: ratio of each method to a plain step, the chosen one in bold."""
    methods = [m for m in rows[0]["ratio"] if m != "noise"] if rows else []
    header = ["model", "params", "batch", "plain ms", "floor (1 + noise)", *[f"{m} ÷ plain" for m in methods]]
    body = []
    for r in rows:
        cells = [f"**{r['ratio'][m]:.2f}**" if m == r["chosen"] else f"{r['ratio'][m]:.2f}" for m in methods]
        floor = f"{1 + r['ratio']['noise']:.2f}"
        body.append([r["model"], f"{r['params']:,}", str(r["batch"]), f"{r['seconds']['plain'] * 1e3:.2f}", floor,
                     *cells])  # fmt: skip
    return header, body
