"""One validated, immutable run configuration.

Flower hands the apps a flat mapping of kebab-case keys (``context.run_config``); the CLI
builds the same mapping. ``RunConfig.from_run_config`` is the single place where those keys
are cast and checked, so a typo or an out-of-range value fails before any training starts,
with a message naming the key. Every key has its default declared once, here, and mirrored
under ``[tool.flwr.app.config]`` in pyproject.toml (a test keeps the two in sync).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedlatent import casting as C
from fedlatent.casting import ConfigError
from fedlatent.data.loading import DATASETS
from fedlatent.data.partition import PARTITIONS
from fedlatent.privacy.accounting import ACCOUNTANTS
from fedlatent.privacy.learners import LEARNERS

MODES = ("raw", "latent-fedavg", "latent-share", "public-only")
ENCODERS = ("public", "federated", "local", "scatternet")
AE_ARCHS = ("mlp", "conv")
CLASSIFIER_ARCHS = ("mlp", "cnn", "tanh-cnn")
SERVER_LEARNERS = ("auto", *LEARNERS)
DP_MODES = ("local", "distributed")
LATENT_CLASSIFIERS = ("mlp", "linear")
OPTIMIZERS = ("adam", "sgd")


def _key(default: Any, check: Any = None, doc: str = "") -> Any:
    return field(default=default, metadata={"check": check, "doc": doc})


@dataclass(frozen=True)
class RunConfig:
    """Every setting of one fedlatent run (attribute names are the keys in snake_case)."""

    dataset: str = _key("digits", C.choice(DATASETS), "digits | fashion-mnist | mnist | mnist-5k")
    data_dir: str = _key("", None, "IDX directory ('' = default location)")
    download: bool = _key(False, None, "allow torchvision to download the data set")
    max_train: int = _key(0, C.at_least(0), "cap on training records (0 = all)")
    mode: str = _key("latent-fedavg", C.choice(MODES), "raw | latent-fedavg | latent-share | public-only")
    encoder: str = _key("public", C.choice(ENCODERS), "public | federated | local | scatternet (data-free)")
    num_clients: int = _key(0, C.at_least(0), "number of clients (0 = every SuperNode of the federation)")
    rounds: int = _key(10, C.at_least(1), "federated rounds of the classifier")
    partition: str = _key("iid", C.choice(PARTITIONS), "iid | dirichlet | shards")
    alpha: float = _key(0.5, C.positive, "Dirichlet concentration")
    seed: int = _key(0, C.at_least(0), "seed of splits, partitions and training")
    public_fraction: float = _key(0.2, C.fraction, "share of training data held out as public")
    public_labels: bool = _key(
        True, None, "the public split's labels are known (false: images only, ae-labels unused, public-only is chance)"
    )
    latent_dim: int = _key(32, C.at_least(1), "size of the latent vector")
    ae_arch: str = _key("mlp", C.choice(AE_ARCHS), "autoencoder: mlp | conv")
    ae_epochs: int = _key(50, C.at_least(1), "autoencoder epochs (federated: per round)")
    ae_labels: float = _key(
        0.0, C.at_least(0.0), "public encoder: weight of a loss on the public labels (0 = reconstruction only)"
    )
    encoder_rounds: int = _key(3, C.at_least(1), "FedAvg rounds of the federated encoder")
    seed_bugs: bool = _key(False, None, "the seed's two bugs: ReLU on bottleneck and logits (comparison only)")
    classifier_arch: str = _key("mlp", C.choice(CLASSIFIER_ARCHS), "raw classifier: mlp | cnn | tanh-cnn (for DP-SGD)")
    local_epochs: int = _key(5, C.at_least(1), "client epochs per round")
    batch_size: int = _key(32, C.at_least(1), "minibatch size")
    lr: float = _key(1e-3, C.positive, "Adam learning rate")
    ae_batch_size: int = _key(0, C.at_least(0), "public autoencoder: minibatch size (0 = auto: 128 from 6,400 records)")
    ae_lr: float = _key(1e-3, C.positive, "public autoencoder: Adam learning rate")
    server_epochs: int = _key(20, C.at_least(1), "latent-share: server epochs on pooled latents")
    server_batch_size: int = _key(0, C.at_least(0), "latent-share: server MLP batch (0 = auto: 256 from 12,800)")
    server_lr: float = _key(0.0, C.at_least(0.0), "latent-share: server MLP Adam lr (0 = auto: 2e-3 at batch 256)")
    server_learner: str = _key(
        "auto", C.choice(SERVER_LEARNERS), "latent-share: auto (lda under DP, else mlp) | mlp | class-mean | lda"
    )
    fraction_train: float = _key(1.0, C.unit, "share of clients sampled per round")
    min_clients: int = _key(0, C.at_least(0), "floor of valid replies a round needs (0 = half the sampled, rounded up)")
    round_timeout: float = _key(3600.0, C.positive, "seconds a round waits for replies; silent nodes are left out")
    node_wait_timeout: float = _key(600.0, C.positive, "deployment: seconds the server waits for its SuperNodes")
    partition_owners: str = _key(
        "", C.owner_map, "deployment with --auth: 'node-id:partition ...' of registered keys ('' = first claim binds)"
    )
    fail_fraction: float = _key(0.0, C.fraction, "fault injection (tests only): share of clients crashing per round")
    epsilon: float = _key(math.inf, C.budget, "record-level DP budget of each client for the run (inf = no DP)")
    delta: float = _key(1e-5, C.probability, "DP delta (keep below 1/records of a client)")
    max_grad_norm: float = _key(1.0, C.positive, "DP-SGD per-sample gradient clip")
    max_update_norm: float = _key(1000.0, C.positive, "without DP: largest L2 norm of an update the server accepts")
    accountant: str = _key("rdp", C.choice(ACCOUNTANTS), "privacy accountant: rdp | prv")
    latent_clip: float = _key(1.0, C.positive, "latent-share: L2 clip of each released latent")
    label_epsilon: float = _key(math.inf, C.budget, "latent-share: randomized-response epsilon (inf = labels in clear)")
    encoder_epsilon: float = _key(math.inf, C.budget, "federated encoder: DP-SGD budget out of epsilon (inf = not DP)")
    reproducible_noise: bool = _key(False, None, "DP noise from the public seed (tests only; reported as not DP)")
    client_dp_noise: float = _key(0.0, C.at_least(0.0), "client-level DP noise multiplier, server side (0 = off)")
    client_dp_clip: float = _key(1.0, C.positive, "client-level DP: L2 clip of each client's update")
    dp_mode: str = _key("local", C.choice(DP_MODES), "record-level DP: local (each client's DP-SGD) | distributed")
    secagg: bool = _key(False, None, "client vectors through Flower's SecAgg+: the server learns only their sum")
    secagg_max_dropouts: int = _key(0, C.at_least(0), "SecAgg+: clients that may drop out of a round")
    secagg_threshold: int = _key(0, C.at_least(0), "SecAgg+: shares to unmask (0 = num-clients - max-dropouts)")
    stat_dim: int = _key(128, C.at_least(1), "distributed latent-share: public PCA dimension of the statistics")
    stat_clip: float = _key(1.0, C.positive, "distributed latent-share: L2 clip of projected latents (public scale)")
    latent_classifier: str = _key("mlp", C.choice(LATENT_CLASSIFIERS), "latent classifier: mlp (256-128) | linear")
    optimizer: str = _key("adam", C.choice(OPTIMIZERS), "classifier optimizer of clients (distributed DP: server)")
    momentum: float = _key(0.9, C.fraction, "SGD momentum when 'optimizer' is sgd")
    cache_dir: str = _key("", None, "cache of decoded data and the public autoencoder, keyed ('' = none)")
    client_threads: int = _key(1, C.at_least(0), "torch threads of each ClientApp (0 = torch's default)")
    out_dir: str = _key("", None, "run directory ('' = runs/<time>-<mode>-<encoder>)")
    overwrite: bool = _key(False, None, "empty a non-empty out-dir first (default: refuse it, runs must not mix)")
    resume: bool = _key(False, None, "continue the run in out-dir from its last checkpoint (fedlatent run --resume)")
    client_state_dir: str = _key("", None, "clients' ledgers and releases across restarts ('' = memory only)")

    @classmethod
    def keys(cls) -> dict[str, Any]:
        """Kebab-case key -> default, in declaration order (the pyproject contract)."""
        return {f.name.replace("_", "-"): f.default for f in dataclasses.fields(cls)}

    @classmethod
    def from_run_config(cls, mapping: Mapping[str, Any]) -> RunConfig:
        """Cast and validate a flat kebab-case mapping; missing keys take defaults.

        Raises
        ------
        ConfigError
            On an unknown key, a value of the wrong type, or an invalid value; the
            message names the key.
        """
        fields = {f.name.replace("_", "-"): f for f in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - set(fields))
        if unknown:
            raise ConfigError(f"{C.unknown_keys(unknown, fields)}; every key: fedlatent run --help")
        values = {}
        for key, f in fields.items():
            raw = mapping.get(key, f.default)
            value = C.cast(key, raw, type(f.default))
            check = f.metadata["check"]
            verdict = check(value) if check else True
            if verdict is not True:
                raise ConfigError(f"config key '{key}' = {raw!r}: {verdict}")
            values[f.name] = value
        cfg = cls(**values)
        cfg._check_combination()
        return cfg

    def _check_combination(self) -> None:
        """Rules between keys (each value is already valid on its own)."""
        self._check_secure_aggregation()
        if math.isfinite(self.encoder_epsilon):
            if self.encoder != "federated" or self.mode == "raw":
                raise ConfigError("config key 'encoder-epsilon' applies only to a latent mode with encoder=federated")
            if not self.encoder_epsilon < self.epsilon:
                raise ConfigError(
                    f"config key 'encoder-epsilon' = {self.encoder_epsilon} must be below 'epsilon' = {self.epsilon}: "
                    "it is the part of each client's budget spent on the encoder"
                )
        if self.ae_labels > 0 and self.encoder != "public":
            raise ConfigError("config key 'ae-labels' applies to the public encoder only (public labels are free)")
        if self.mode == "public-only" and (self.dp or self.encoder_dp or self.client_dp_noise > 0):
            raise ConfigError(
                "mode 'public-only' trains on the public split alone: no private record is touched, so "
                "'epsilon', 'encoder-epsilon' and 'client-dp-noise' do not apply (its epsilon is 0)"
            )
        if self.client_dp_noise > 0 and self.mode == "latent-share":
            raise ConfigError("config key 'client-dp-noise' applies to weight updates (raw, latent-fedavg) only")

    def _check_secure_aggregation(self) -> None:
        """What distributed DP and SecAgg+ need (README "Distributed DP and secure aggregation")."""
        if self.dp_mode == "distributed":
            needs = {
                "'epsilon' finite (it is record-level DP)": self.dp,
                "mode raw, latent-fedavg, or latent-share with a public or scatternet encoder": (
                    self.mode in ("raw", "latent-fedavg")
                    or (self.mode == "latent-share" and self.encoder in ("public", "scatternet"))
                ),
                "'secagg' true: without it the server sees each client's share, whose epsilon is epsilon_local": (
                    self.secagg
                ),
                "'fraction-train' 1 (every client's records are sampled at the same rate)": self.fraction_train == 1,
                "'client-dp-noise' 0 and 'encoder-epsilon' inf": self.client_dp_noise == 0 and not self.encoder_dp,
                "'accountant' rdp (the Skellam accountant is an RDP one)": self.accountant == "rdp",
                "'resume' false (a distributed run cannot be resumed yet)": not self.resume,
            }
            if missing := [k for k, ok in needs.items() if not ok]:
                raise ConfigError(f"config key 'dp-mode' = 'distributed' needs {'; '.join(missing)}")
        if self.secagg and self.dp_mode != "distributed":
            raise ConfigError(
                "config key 'secagg' = true carries distributed DP's integer shares: set 'dp-mode' distributed "
                "(with a finite 'epsilon'); secure aggregation of plain FedAvg updates is not implemented"
            )
        if self.num_clients and self.secagg:
            if self.secagg_max_dropouts >= self.num_clients:
                raise ConfigError(f"config key 'secagg-max-dropouts' must be below 'num-clients' = {self.num_clients}")
            if self.secagg_threshold > self.num_clients:
                raise ConfigError(f"config key 'secagg-threshold' must be at most 'num-clients' = {self.num_clients}")

    @property
    def statistics_dim(self) -> int:
        """The projection's dimension in distributed latent-share: ``stat-dim``, at most the latent's width."""
        return min(self.stat_dim, self.feature_dim)

    @property
    def min_survivors(self) -> int:
        """Clients whose noise shares a distributed-DP round must hold: num-clients − secagg-max-dropouts."""
        return self.num_clients - self.secagg_max_dropouts

    def to_run_config(self) -> dict[str, Any]:
        """The inverse of ``from_run_config``: a flat kebab-case mapping."""
        return {k.replace("_", "-"): v for k, v in dataclasses.asdict(self).items()}

    @property
    def dp(self) -> bool:
        """True when record-level differential privacy is on (finite ``epsilon``)."""
        return math.isfinite(self.epsilon)

    @property
    def encoder_dp(self) -> bool:
        """True when the federated encoder is trained with DP-SGD (part of ``epsilon``)."""
        return math.isfinite(self.encoder_epsilon)

    @property
    def classifier_epsilon(self) -> float:
        """The part of ``epsilon`` left for the classifier or the release (basic composition)."""
        return self.epsilon - self.encoder_epsilon if self.encoder_dp else self.epsilon

    @property
    def learner(self) -> str:
        """The server learner of ``latent-share``: ``auto`` is LDA on noisy latents, else the MLP."""
        if self.server_learner != "auto":
            return self.server_learner
        return "lda" if self.dp else "mlp"

    def public_batch_size(self, records: int) -> int:
        """The public autoencoder's batch: ``ae-batch-size``, or auto (0) by the public split's size.

        Measured (``experiments/speed_defaults.py``, one thread): on 12,000 Fashion-MNIST public
        images, 30 epochs at batch 128 match batch 32 (test BCE 0.2868 vs 0.2850, latent probe
        83.0% vs 83.6%) in a third of the time (2.1 vs 6.6 s per epoch); on 287 digits images
        batch 128 leaves 3 steps per epoch and loses 14 points. Auto takes 128 from 6,400
        records (50 steps per epoch), else ``batch-size``.
        """
        if self.ae_batch_size:
            return self.ae_batch_size
        return 128 if records >= 50 * 128 else self.batch_size

    def server_training(self, records: int) -> tuple[int, float]:
        """``(batch size, lr)`` of latent-share's server MLP on ``records`` pooled latents (0 = auto).

        Measured on 48,000 Fashion-MNIST latents, 20 epochs: batch 256 at lr 2e-3 reaches
        85.2% in 5.8 s where batch 32 at 1e-3 reaches 84.9% in 27.6 s. Auto takes 256 (and
        lr 2e-3) from 12,800 latents (50 steps per epoch), else ``batch-size`` and ``lr``.
        """
        large = records >= 50 * 256
        batch = self.server_batch_size or (256 if large else self.batch_size)
        lr = self.server_lr or (2e-3 if batch >= 256 else self.lr)
        return batch, lr

    @property
    def release_aware_learner(self) -> bool:
        """True when ``latent-share``'s server learner knows the release (clip, noise, label ε).

        That is a non-MLP learner, or any learner under DP; the classifier then clips its input
        as the release did (``plan.build_classifier``).
        """
        return self.mode == "latent-share" and (self.learner != "mlp" or self.dp)

    @property
    def public_label_weight(self) -> float:
        """The public autoencoder's label-loss weight: ``ae-labels``, or 0 when the public split has no labels.

        With ``public-labels`` false the encoder learns from the images alone whatever ``ae-labels``
        says, so that one sweep can cross the two (``results.json`` holds both settings).
        """
        return self.ae_labels if self.public_labels else 0.0

    @property
    def feature_dim(self) -> int:
        """Length of what the encoder outputs: ``latent-dim``, or the ScatterNet's feature count.

        ``scatternet`` features are fixed by the image size (3,969 on 28×28, 144 on digits' 8×8;
        ``learning.scatter``), so ``latent-dim`` does not apply to them.
        """
        if self.encoder != "scatternet":
            return self.latent_dim
        side = 8 if self.dataset == "digits" else 28
        return {8: 144, 28: 3969}[side]

    @property
    def encoder_arch(self) -> str:
        """The ``Encoder`` architecture: ``scatternet``, or ``ae-arch`` for the autoencoders."""
        return "scatternet" if self.encoder == "scatternet" else self.ae_arch

    @property
    def is_latent(self) -> bool:
        """True for the modes that train on latents rather than raw images."""
        return self.mode in ("latent-fedavg", "latent-share")
