"""What each party of a run holds and builds, derived from the RunConfig alone.

Every process of a federation (the ServerApp and each ClientApp, possibly on other machines)
recomputes the same plan from the same config: the data set, the public split, and the
partition of the private rest. Determinism is the contract: the seed fixes everything, so
no index list ever needs to travel in a message. A client takes only its own partition;
the server takes the public split (public by definition), the test split (for evaluation)
and the partition indices only to export ``private_index/`` for scoring attacks.

The same holds for privacy settings: a client's budget and the noise *scale* of its DP-SGD
rounds and of the latent release are functions of the config (``client_budget``,
``dp_round_plan``, ``release_noise_std``), public settings the server and the attacker can
recompute. The noise itself is not: ``noise_generator`` draws it from a secret seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedlatent import __version__
from fedlatent.config import RunConfig
from fedlatent.data.loading import Dataset
from fedlatent.data.partition import public_private_split
from fedlatent.data.store import Memo, cached_dataset, dataset_key, stored_parts
from fedlatent.learning.cache import cached_training, data_digest
from fedlatent.learning.models import Autoencoder, Encoder, ImageClassifier, LatentClassifier
from fedlatent.learning.seeding import generator, secret_generator, seeded_init
from fedlatent.learning.training import (
    OnEpoch,
    classification_losses,
    reconstruction_record_losses,
    train_autoencoder,
    train_hybrid_autoencoder,
)
from fedlatent.partitions import partition
from fedlatent.privacy.client import DPPlan, plan_round, train_round
from fedlatent.privacy.learners import ClippedClassifier
from fedlatent.privacy.ledger import Ledger
from fedlatent.privacy.mechanisms import latent_noise_std
from fedlatent.privacy.statistics import Projected


@dataclass(frozen=True)
class DataPlan:
    """The data set plus who holds which training records (indices into ``x_train``)."""

    dataset: Dataset
    public_idx: np.ndarray
    client_idx: tuple[np.ndarray, ...]

    def client(self, partition_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of one client's private partition."""
        return self._take(self.client_idx[partition_id])

    def public(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of the public split (everyone's, the attacker's too)."""
        return self._take(self.public_idx)

    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The held-out test split, used only for evaluation."""
        return torch.from_numpy(self.dataset.x_test), torch.from_numpy(self.dataset.y_test)

    def _take(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        ds = self.dataset
        return torch.from_numpy(ds.x_train[idx]), torch.from_numpy(ds.y_train[idx])


PLANS: Memo[DataPlan] = Memo(capacity=2)  # this process's plans, by data key and split settings
_SPLIT = ("public_fraction", "seed", "num_clients", "partition", "alpha")


def make_plan(cfg: RunConfig) -> DataPlan:
    """Load the data set and split it as ``cfg`` says (same config -> same plan).

    Once per process and config: the data set comes decoded from ``data.store`` (and from
    ``cache-dir`` when set) and the split from ``PLANS``, both keyed on the source files'
    digest, so a ClientApp message costs one look-up, not a decode and a partition.
    """
    data_dir, download, max_train = cfg.data_dir or None, cfg.download, cfg.max_train
    key = dataset_key(cfg.dataset, data_dir=data_dir, download=download, max_train=max_train)
    key += tuple(str(getattr(cfg, k)) for k in _SPLIT)

    def make() -> DataPlan:
        ds = cached_dataset(
            cfg.dataset, data_dir=data_dir, download=download, max_train=max_train, cache_dir=cfg.cache_dir
        )
        public_idx, private_idx = public_private_split(ds.y_train, public_fraction=cfg.public_fraction, seed=cfg.seed)

        def compute() -> list[np.ndarray]:
            scheme, k = cfg.partition, cfg.num_clients
            return partition(ds.y_train, private_idx, num_clients=k, scheme=scheme, alpha=cfg.alpha, seed=cfg.seed)

        parts = stored_parts(cfg.cache_dir, key, compute)  # once per machine with a cache-dir
        return DataPlan(dataset=ds, public_idx=public_idx, client_idx=tuple(parts))

    return PLANS.get(key, make)


def build_autoencoder(cfg: RunConfig, ds: Dataset) -> Autoencoder:
    """A fresh autoencoder, seeded so every party starts from the same weights."""
    with seeded_init(cfg.seed):
        return Autoencoder(
            image_shape=ds.image_shape, latent_dim=cfg.latent_dim, arch=cfg.ae_arch, seed_bugs=cfg.seed_bugs
        )


def public_autoencoder(
    cfg: RunConfig, plan: DataPlan, *, on_epoch: OnEpoch | None = None
) -> tuple[Autoencoder, float, bool]:
    """The ``public`` encoder's autoencoder, trained on the public split; ``(ae, loss, cache hit)``.

    Reconstruction only, or with ``ae-labels`` > 0 also a loss on the public labels. With a
    ``cache-dir`` the weights come from the cache when every setting and the data agree.
    ``on_epoch`` follows the training (e.g. a ``progress.Progress``).
    """
    ae = build_autoencoder(cfg, plan.dataset)
    x, y = plan.public()
    batch_size = cfg.public_batch_size(len(x))
    settings = ("seed", "latent_dim", "ae_arch", "ae_epochs", "ae_lr", "seed_bugs")
    labels = cfg.public_label_weight  # 0 without public labels: the images alone
    key = {k: getattr(cfg, k) for k in settings} | {"ae_labels": labels, "version": __version__}
    key["data"] = data_digest(x.numpy(), y.numpy()) if labels > 0 else data_digest(x.numpy())
    key["batch_size"] = batch_size

    def train() -> float:
        gen = generator(cfg.seed, 0)
        if labels > 0:
            return train_hybrid_autoencoder(
                ae, x, y, num_classes=plan.dataset.num_classes, label_weight=labels,
                epochs=cfg.ae_epochs, batch_size=batch_size, lr=cfg.ae_lr, generator=gen, on_epoch=on_epoch,
            )  # fmt: skip
        return train_autoencoder(
            ae, x, epochs=cfg.ae_epochs, batch_size=batch_size, lr=cfg.ae_lr, generator=gen, on_epoch=on_epoch
        )

    loss, hit = cached_training(cfg.cache_dir, name="public-autoencoder", key=key, module=ae, train=train)
    return ae, loss, hit


def build_encoder(cfg: RunConfig, ds: Dataset) -> Encoder:
    """A fresh encoder of the run's architecture (untrained; ``scatternet``: its fixed transform)."""
    with seeded_init(cfg.seed):
        return Encoder(
            image_shape=ds.image_shape,
            latent_dim=cfg.feature_dim,
            arch=cfg.encoder_arch,
            cache_dir=cfg.cache_dir,
            seed_bugs=cfg.seed_bugs,
        )


def build_classifier(cfg: RunConfig, ds: Dataset) -> nn.Module:
    """The model the federation trains: an image classifier in ``raw``, else a latent one.

    In ``latent-share`` with DP or a linear server learner, the latent model is wrapped in a
    ``ClippedClassifier`` that clips its input as the release did (``share_clip``).
    """
    with seeded_init(cfg.seed + 1):
        if not cfg.is_latent:  # raw, and public-only's exported model
            return ImageClassifier(image_shape=ds.image_shape, num_classes=ds.num_classes, arch=cfg.classifier_arch)
        if cfg.mode == "latent-share" and cfg.dp_mode == "distributed":  # LDA on public projections
            blank = torch.zeros(cfg.feature_dim, cfg.statistics_dim)
            return Projected(blank[:, 0], blank, clip=cfg.stat_clip, num_classes=ds.num_classes)
        hidden = () if cfg.latent_classifier == "linear" else (256, 128)
        latent = LatentClassifier(
            latent_dim=cfg.feature_dim, num_classes=ds.num_classes, hidden=hidden, seed_bugs=cfg.seed_bugs
        )
        if not cfg.release_aware_learner:
            return latent
        inner = latent if cfg.learner == "mlp" else nn.Linear(cfg.feature_dim, ds.num_classes)
        return ClippedClassifier(inner, clip=share_clip(cfg))


def share_clip(cfg: RunConfig) -> float:
    """The L2 clip of released latents: ``latent-clip`` under DP; without DP none (float32 max)."""
    return cfg.latent_clip if cfg.dp else float(torch.finfo(torch.float32).max)


def client_budget(cfg: RunConfig) -> float:
    """The ε a client may spend in the run: ``epsilon``, plus ``label-epsilon`` when labels are randomized.

    In ``latent-share`` randomized response on labels adds its ε to the latents' (README,
    "What ε means"); the ledger holds both, so the ε it reports covers both.
    """
    labels = cfg.label_epsilon if cfg.mode == "latent-share" and math.isfinite(cfg.label_epsilon) else 0.0
    return cfg.epsilon + labels


def new_ledger(cfg: RunConfig) -> Ledger:
    """A client's empty ledger for this run's budget, δ and accountant."""
    return Ledger(budget=client_budget(cfg), delta=cfg.delta, accountant=cfg.accountant)


def dp_round_plan(cfg: RunConfig, num_records: int, *, encoder: bool = False) -> DPPlan:
    """Noise of one DP-SGD round, calibrated so that all planned rounds of the phase cost its share.

    The encoder phase (a DP federated encoder) gets ``encoder-epsilon`` over ``encoder-rounds``
    rounds of ``ae-epochs``; the classifier gets the rest of ``epsilon`` over ``rounds`` rounds
    of ``local-epochs``. The ledger composes both with the accountant, which is never more
    than the sum of the parts, so the split cannot overspend.
    """
    return plan_round(
        num_records,
        epsilon=cfg.encoder_epsilon if encoder else cfg.classifier_epsilon,
        delta=cfg.delta,
        accountant=cfg.accountant,
        batch_size=cfg.batch_size,
        epochs=cfg.ae_epochs if encoder else cfg.local_epochs,
        rounds=cfg.encoder_rounds if encoder else cfg.rounds,
    )


def dp_train_round(
    cfg: RunConfig,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    ledger: Ledger,
    generator: torch.Generator,
    encoder: bool = False,
) -> tuple[dict[str, float], bool]:
    """One client DP-SGD round of the run (``privacy.client.train_round``) with the config's settings.

    ``encoder``: the federated autoencoder's round (reconstruction of ``x``, its share of ε, Adam),
    else the classifier's (cross-entropy on ``y``, the config's optimizer). Returns ``(metrics, trained)``.
    """
    return train_round(
        model,
        x,
        y,
        plan=dp_round_plan(cfg, len(x), encoder=encoder),
        ledger=ledger,
        record_loss_fn=reconstruction_record_losses if encoder else classification_losses,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        max_grad_norm=cfg.max_grad_norm,
        generator=generator,
        optimizer="adam" if encoder else cfg.optimizer,
        momentum=cfg.momentum,
    )


def noise_generator(cfg: RunConfig, *parts: int) -> torch.Generator:
    """The randomness of one DP mechanism (noise, Poisson sampling, randomized labels) of a client.

    Secret (OS entropy) unless ``reproducible-noise``, which derives it from the public seed and
    ``parts`` for tests that compare runs exactly: whoever knows the settings can then recompute the
    noise and subtract it, so such a run is reported as not differentially private.
    """
    return generator(cfg.seed, *parts) if cfg.reproducible_noise else secret_generator()


def release_noise_std(cfg: RunConfig) -> float:
    """Per-coordinate std of the latent release: a public setting the server's learner and the attacker use."""
    return latent_noise_std(
        epsilon=cfg.classifier_epsilon, delta=cfg.delta, clip=cfg.latent_clip, accountant=cfg.accountant
    )
