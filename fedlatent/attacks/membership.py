"""Membership inference on the final model: was this record in some client's training data?

The game (Carlini et al. 2022, "Membership Inference Attacks From First Principles"): the
*scorer* draws candidates, half members (private training records, from ``Truth``) and half
non-members (test records no one trained on), shuffles them and hands the attack only the
images and labels (``scoring.candidates``). The attack returns one score per candidate, higher for
"member"; ``scoring.score_membership`` reports ROC AUC and TPR at 1% / 0.1% FPR, because an attack
that is confident on a few records matters more than its average (the paper's argument).

Two attacks, both reading only the ``AttackerView``:

- ``loss_attack``: the final model's log-probability of the true label (Yeom et al. 2018):
  training records tend to have lower loss.
- ``shadow_attack``: offline LiRA. Shadow models of the run's architecture are trained on
  random halves of the aux data, never on a candidate, so they show how confident a model is
  on each candidate *when it did not train on it* (the OUT distribution). A candidate scores
  by how far above that Gaussian the target model's confidence lies, which corrects for
  records that are simply easy or hard.

Latent classifiers see latents, not images: the candidates are encoded with the server's
encoder. With ``local`` encoders the server has no encoder, so neither attack applies and
both raise ``NotApplicable`` instead of returning meaningless scores.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedlatent.attacks.common import NotApplicable
from fedlatent.attacks.view import AttackerView
from fedlatent.learning import seeding
from fedlatent.learning.progress import Progress
from fedlatent.learning.training import encode, train_classifier
from fedlatent.privacy.mechanisms import gaussian_release

# Below this many shadows a per-candidate variance is too noisy to divide by; LiRA's paper
# uses one variance shared by all candidates in that regime (their "global variance").
PER_CANDIDATE_VARIANCE_MIN = 16


def _model_inputs(view: AttackerView, x: np.ndarray) -> torch.Tensor:
    """What the classifier takes for images ``x``: the images, or their latents."""
    images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if not view.cfg.is_latent:
        return images
    encoder = view.encoder()
    if encoder is None:
        raise NotApplicable(
            "membership inference needs the run's encoder to feed candidates to the latent classifier, "
            "but with encoder='local' each client's encoder is secret and the server holds none"
        )
    return encode(encoder, images)


@torch.no_grad()
def _log_odds(model: nn.Module, inputs: torch.Tensor, y: np.ndarray) -> np.ndarray:
    """LiRA's logit scaling of the true-label confidence: ``log(p_y / (1 - p_y))``.

    Computed as ``logit_y - logsumexp(other logits)``, which stays finite where ``p_y``
    rounds to 1 (exactly the overfit members the attack is after).
    """
    model.eval()
    logits = model(inputs).double()
    labels = torch.from_numpy(y).long()[:, None]
    true = logits.gather(1, labels)[:, 0]
    others = logits.scatter(1, labels, float("-inf")).logsumexp(dim=1)
    return (true - others).numpy()


def loss_attack(view: AttackerView, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Score each candidate by the final model's log-probability of its label (= -loss).

    Raises
    ------
    NotApplicable
        For latent classifiers whose encoder is the clients' secret (``local``).
    """
    model = view.classifier()
    with torch.no_grad():
        logits = model(_model_inputs(view, x))
        loss = nn.functional.cross_entropy(logits, torch.from_numpy(np.asarray(y)).long(), reduction="none")
    return (-loss).double().numpy()


def _fresh_classifier(view: AttackerView, generator: torch.Generator) -> nn.Module:
    """The run's classifier architecture with new random weights drawn from ``generator``."""
    model = view.classifier()
    with seeding.seeded(generator):
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return model


def _shadow_data(view: AttackerView, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Aux records as the target's training saw them: images, latents, or released latents.

    In ``latent-share`` with DP the server trained on clipped, noised latents; the attacker
    knows the clip norm and noise std (public settings), so its shadows train on aux latents
    passed through the same release. Labels stay clean (randomized response on labels, if
    any, is not mimicked): a known limitation of this shadow training.
    """
    inputs = _model_inputs(view, view.aux_x)
    std = view.latent_noise_std()
    if std > 0:
        inputs = gaussian_release(inputs, clip=view.cfg.latent_clip, std=std, generator=generator)
    return inputs, torch.from_numpy(view.aux_y).long()


def shadow_attack(
    view: AttackerView,
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_shadows: int = 4,
    epochs: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Offline LiRA: how far the target's confidence lies above the shadows' OUT Gaussian.

    Parameters
    ----------
    view : AttackerView
        The server's view; shadows train on halves of ``view.aux_x`` / ``view.aux_y``.
    x, y : ndarray
        Candidate images and labels (from ``scoring.candidates``; never trained on by a shadow).
    num_shadows : int
        At least 2. Below ``PER_CANDIDATE_VARIANCE_MIN`` one variance, the mean of the
        candidates' shadow variances, is used for all candidates (LiRA's global variance):
        a variance from a handful of samples would make the z-scores erratic.
    epochs : int, optional
        Shadow training epochs; default the target's own (``rounds * local_epochs`` in the
        FedAvg modes, ``server_epochs`` in ``latent-share``). Batch size and learning rate
        are those the target was trained with (the server's in ``latent-share``).
        Shadows train without DP-SGD even when the run used it.
    seed : int
        Fixes the aux halves, initializations and batch orders.

    Returns
    -------
    ndarray
        One float64 z-score per candidate; higher means more likely a member. One-sided: a
        target confidence below the OUT mean is evidence against membership, not for it.

    Raises
    ------
    NotApplicable
        For latent classifiers whose encoder is the clients' secret (``local``).
    """
    if num_shadows < 2:
        raise ValueError(f"num_shadows must be >= 2 to estimate a variance, got {num_shadows}")
    cfg = view.cfg
    share = cfg.mode == "latent-share"  # the server trained the target, with its own settings
    if epochs is None:
        epochs = cfg.server_epochs if share else cfg.rounds * cfg.local_epochs
    pooled = sum(len(labels) for _, labels in view.latents.values())
    batch_size, lr = cfg.server_training(pooled) if share else (cfg.batch_size, cfg.lr)
    target_in = _model_inputs(view, x)
    aux_in, aux_y = _shadow_data(view, seeding.generator(seed, 0))
    out = np.empty((num_shadows, len(x)))
    progress = Progress("attack: LiRA shadow models", num_shadows, unit="models", after=10)
    for s in range(num_shadows):
        gen = seeding.generator(seed, 1, s)
        half = torch.randperm(len(aux_in), generator=gen)[: len(aux_in) // 2]
        shadow = _fresh_classifier(view, gen)
        train_classifier(shadow, aux_in[half], aux_y[half], epochs=epochs, batch_size=batch_size, lr=lr, generator=gen)
        out[s] = _log_odds(shadow, target_in, y)
        progress(s + 1)
    mean = out.mean(axis=0)
    var = out.var(axis=0, ddof=1)
    if num_shadows < PER_CANDIDATE_VARIANCE_MIN:
        var = np.full_like(var, var.mean())
    return (_log_odds(view.classifier(), target_in, y) - mean) / np.sqrt(var + 1e-12)
