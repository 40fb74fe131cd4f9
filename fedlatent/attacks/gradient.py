"""Gradient inversion of client uploads (Zhu et al. 2019 "DLG"; Geiping et al. 2020).

The honest-but-curious server holds each accepted upload and the global weights it sent that
round. It treats the upload's pseudo-gradient ``start - weights`` as "the gradient" and
optimizes dummy inputs (and labels) until the classifier's gradient at ``start`` points the
same way (cosine matching, Geiping et al.; squared distance, Zhu et al., is kept as an option).

This is the realistic and hard case, not the textbook one: a client runs ``local_epochs``
epochs of Adam over its whole partition, so the update is a sum of many steps over many
records, rescaled per coordinate by Adam, and taken at drifting weights. It is not the
gradient of one batch at ``start``. Even one record and one Adam step is hard: Adam's first
step is ``lr * m / sqrt(v) ~ lr * sign(g)``, which keeps the gradient's signs and discards its
magnitudes, so cosine matching sees a distorted target. An attack that recovers single images
from one exact gradient (the unit tests) may recover little more than an average digit from
such an update; the scores say how much, against the aux-mean baseline.

For latent classifiers the recovered inputs are latents. When the server knows the encoder
(``public``/``federated``) it trains an inverse network on ``(encoder(aux), aux)`` (He et al.'s
black-box setting, ``attacks.common.train_inverse``) and maps them to images; with
``local`` encoders only the latents are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from fedlatent.attacks.common import NotApplicable, total_variation, train_inverse
from fedlatent.attacks.update_inversion import invert_update
from fedlatent.attacks.view import AttackerView
from fedlatent.learning import seeding
from fedlatent.learning.progress import Progress
from fedlatent.learning.training import encode

Key = tuple[int, int]  # (round, partition)


@dataclass(frozen=True, eq=False)
class GradientInversion:
    """Output of ``gradient_inversion``, keyed by ``(round, partition)`` of the upload.

    ``images`` holds ``(num_inputs, C, H, W)`` reconstructions in [0, 1] (empty for latent
    classifiers whose encoder the server does not know); ``latents`` holds the recovered
    latents of latent classifiers; ``labels`` the recovered labels.
    """

    images: dict[Key, np.ndarray] = field(default_factory=dict)
    latents: dict[Key, np.ndarray] = field(default_factory=dict)
    labels: dict[Key, np.ndarray] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def infer_labels(model: nn.Module, grads: list[torch.Tensor], num_inputs: int) -> torch.Tensor:
    """Labels from the last layer's gradient (iDLG, Zhao et al. 2020).

    With cross-entropy, the last layer's weight gradient is ``(softmax - onehot) h^T`` and
    ``h >= 0`` after a ReLU, so the row of a present label sums to a negative number while
    the others are positive. The ``num_inputs`` most negative rows are taken (cycling when
    there are more inputs than classes). Exact for one record; a heuristic for a batch.
    """
    params = list(model.parameters())
    last = max(i for i, p in enumerate(params) if p.ndim == 2)
    rows = grads[last].detach().sum(dim=1)
    order = torch.argsort(rows)
    return order[torch.arange(num_inputs) % len(order)]


def _mismatch(grads: tuple[torch.Tensor, ...], target: list[torch.Tensor], kind: str) -> torch.Tensor:
    """Distance between two gradients over all layers at once."""
    if kind == "l2":
        return sum(((g - t) ** 2).sum() for g, t in zip(grads, target, strict=True))  # type: ignore[return-value]
    dot = sum((g * t).sum() for g, t in zip(grads, target, strict=True))
    norm_g = torch.sqrt(sum((g**2).sum() for g in grads))  # type: ignore[arg-type]
    norm_t = torch.sqrt(sum((t**2).sum() for t in target))  # type: ignore[arg-type]
    return 1.0 - dot / (norm_g * norm_t + 1e-12)


def invert_gradient(
    model: nn.Module,
    target_grads: list[torch.Tensor],
    *,
    input_shape: tuple[int, ...],
    num_inputs: int = 1,
    labels: torch.Tensor | None = None,
    steps: int = 500,
    lr: float = 0.1,
    tv: float = 0.0,
    loss: Literal["cosine", "l2"] = "cosine",
    bounded: bool = True,
    infer: bool = True,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Find inputs whose cross-entropy gradient matches ``target_grads``.

    Parameters
    ----------
    model : nn.Module
        The classifier at the weights where the gradient was taken; left unchanged.
    target_grads : list of Tensor
        One tensor per ``model.parameters()`` entry, in that order (any positive scale).
    input_shape : tuple of int
        Shape of one input, e.g. ``(1, 8, 8)`` or ``(latent_dim,)``.
    num_inputs : int
        How many inputs the gradient is assumed to average over.
    labels : Tensor, optional
        Known labels. Without them they are inferred from the last layer (``infer=True``,
        iDLG) or optimized as soft labels alongside the inputs (``infer=False``, DLG).
    steps, lr : int, float
        Adam steps and learning rate on the dummy variables (cosine-annealed).
    tv : float
        Weight of the total-variation prior (images only; 0 for latents).
    loss : {"cosine", "l2"}
        Gradient distance: ``1 - cos`` (scale-free, suits pseudo-gradients) or squared L2.
    bounded : bool
        Parametrize inputs as ``sigmoid(u)`` so they stay images in [0, 1]; ``False`` leaves
        them unconstrained (latents).
    generator : torch.Generator
        Seeds the random start.

    Returns
    -------
    (inputs, labels) : tuple of Tensor
        ``(num_inputs, *input_shape)`` inputs and ``(num_inputs,)`` integer labels.
    """
    if loss not in ("cosine", "l2"):
        raise ValueError(f"loss must be 'cosine' or 'l2', got {loss!r}")
    model.eval()
    params = list(model.parameters())
    target = [t.detach().to(p.dtype) for t, p in zip(target_grads, params, strict=True)]
    u = torch.randn((num_inputs, *input_shape), generator=generator).requires_grad_(True)
    variables = [u]
    soft: torch.Tensor | None = None
    if labels is None and infer:
        labels = infer_labels(model, target, num_inputs)
    elif labels is None:
        num_classes = target[max(i for i, p in enumerate(params) if p.ndim == 2)].shape[0]
        soft = torch.randn((num_inputs, num_classes), generator=generator).requires_grad_(True)
        variables.append(soft)
    optimizer = torch.optim.Adam(variables, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))

    def inputs() -> torch.Tensor:
        return torch.sigmoid(u) if bounded else u

    for _ in range(steps):
        x = inputs()
        logits = model(x)
        if soft is not None:
            ce = -(torch.softmax(soft, dim=1) * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
        else:
            assert labels is not None
            ce = nn.functional.cross_entropy(logits, labels)
        # create_graph: the gradient itself must be differentiable w.r.t. the dummy inputs.
        grads = torch.autograd.grad(ce, params, create_graph=True)
        objective = _mismatch(grads, target, loss)
        if tv > 0 and bounded:
            objective = objective + tv * total_variation(x).mean()
        # Differentiate w.r.t. the dummies only: backward() would also fill the model's .grad.
        for v, g in zip(variables, torch.autograd.grad(objective, variables), strict=True):
            v.grad = g
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        final = inputs().detach().clone()
        final_labels = soft.argmax(dim=1) if soft is not None else labels
    assert final_labels is not None
    return final, final_labels.detach().clone()


def _pseudo_gradient(
    model: nn.Module, start: dict[str, np.ndarray], weights: dict[str, np.ndarray]
) -> list[torch.Tensor]:
    """``start - weights`` per parameter, in ``model.parameters()`` order.

    Descent moves weights against the gradient, so the difference points along (a sum of)
    gradients; cosine matching needs only its direction, not Adam's scale.
    """
    return [
        torch.from_numpy(np.asarray(start[name], dtype=np.float32) - np.asarray(weights[name], dtype=np.float32))
        for name, _ in model.named_parameters()
    ]


def _tensors(model: nn.Module, state: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.asarray(state[name], dtype=np.float32)) for name, _ in model.named_parameters()}


def gradient_inversion(
    view: AttackerView,
    *,
    max_uploads: int = 3,
    num_inputs: int = 1,
    steps: int = 300,
    lr: float = 0.1,
    tv: float = 1e-2,
    loss: Literal["cosine", "l2"] = "cosine",
    inverse_epochs: int = 100,
    local_steps: int = 0,
    first: int = 0,
    seed: int = 0,
) -> GradientInversion:
    """Invert ``max_uploads`` classifier uploads of the run, from the ``first`` (0-based) on.

    Each upload's pseudo-gradient ``start - weights`` is matched at the ``start`` weights by
    ``invert_gradient`` (see the module docstring for why this is the hard case). Image
    classifiers yield images; latent classifiers yield latents, mapped to images by an
    inverse network trained on ``(encoder(aux), aux)`` when the server knows the encoder.

    Parameters
    ----------
    view : AttackerView
        The server's view; the only data source.
    max_uploads, first : int
        How many uploads to attack, skipping the ``first`` ones (in the view's order: by round,
        then partition); the runner attacks the first few to choose a variant, then the next.
    num_inputs : int
        How many records the attack assumes behind each update.
    steps, lr, tv, loss
        Passed to ``invert_gradient`` (``tv`` only for image classifiers).
    inverse_epochs : int
        Training epochs of the inverse network (latent classifiers with a known encoder).
    local_steps : int
        0: single-step matching (``invert_gradient``). ``k > 0``: the upload is modelled as ``k``
        unrolled Adam steps at the run's learning rate (``update_inversion.invert_update``),
        the clients' own optimizer; labels from iDLG on the pseudo-gradient.
    seed : int
        Seeds every random start and the inverse network.
    """
    cfg = view.cfg
    every = [u for u in view.uploads if u.phase == "classifier" and u.start is not None]
    uploads = every[first : first + max_uploads]
    if not uploads and cfg.secagg:
        raise NotApplicable(
            "secure aggregation: the server holds only each round's sum over the clients' shares (a DP-SGD "
            f"step over ~{cfg.batch_size} records), never one client's update; no per-client upload to invert"
        )
    if not uploads:
        left = f" after the first {first}" if every else ""
        raise NotApplicable(f"no classifier weight uploads to invert{left} (mode {cfg.mode}, {len(every)} in all)")
    latent = cfg.is_latent
    input_shape: tuple[int, ...] = (cfg.feature_dim,) if latent else view.image_shape
    settings: dict[str, Any] = dict(max_uploads=max_uploads, num_inputs=num_inputs, steps=steps, lr=lr, loss=loss)
    settings.update(tv=0.0 if latent else tv, inverse_epochs=inverse_epochs, seed=seed, uploads_attacked=len(uploads))
    settings["first_upload"] = first
    target = f"{local_steps} unrolled Adam steps" if local_steps else "pseudo-gradient start - weights"
    settings.update(target=target, local_steps=local_steps, inputs="latents" if latent else "images")
    out = GradientInversion(settings=settings)
    progress = Progress("attack: gradient inversion", len(uploads), unit="uploads", after=10)
    for i, up in enumerate(uploads):
        assert up.start is not None
        model = view.classifier(up.start)
        gen = seeding.generator(seed, 5, i)
        if local_steps:
            pseudo = _pseudo_gradient(model, up.start, up.weights)
            labels = infer_labels(model, pseudo, num_inputs)
            x = invert_update(
                model, _tensors(model, up.start), _tensors(model, up.weights), input_shape=input_shape,
                labels=labels, local_steps=local_steps, local_lr=cfg.lr, steps=steps, lr=lr,
                tv=0.0 if latent else tv, bounded=not latent, generator=gen,
            )  # fmt: skip
        else:
            x, labels = invert_gradient(
                model, _pseudo_gradient(model, up.start, up.weights), input_shape=input_shape,
                num_inputs=num_inputs, steps=steps, lr=lr, tv=0.0 if latent else tv, loss=loss,
                bounded=not latent, generator=gen,
            )  # fmt: skip
        key = (up.rnd, up.partition)
        out.labels[key] = labels.numpy()
        (out.latents if latent else out.images)[key] = x.numpy()
        progress(i + 1)
    encoder = view.encoder()
    if latent and out.latents and encoder is not None:
        aux = torch.from_numpy(view.aux_x)
        inverse = train_inverse(encode(encoder, aux), aux, epochs=inverse_epochs, generator=seeding.generator(seed, 6))
        inverse.eval()
        with torch.no_grad():
            for key, z in out.latents.items():
                img = inverse(torch.from_numpy(z)).reshape(len(z), *view.image_shape).clamp(0.0, 1.0)
                out.images[key] = img.numpy()
    out.settings["inverse_network"] = bool(out.images) and latent
    return out
