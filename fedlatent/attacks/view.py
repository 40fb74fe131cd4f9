"""What an attacker holds, and (kept apart) what the attacks are scored against.

``AttackerView`` is built from a run directory's ``server_view/`` and the public split, and
from nothing else: every attack takes one as its only source of data (breaching-style, the
interface enforces the threat model). It holds the public (aux) records, the test split the
server evaluates on, the frozen encoder the server knows (``public``/``federated``), the final
classifier, every accepted upload and broadcast, and the shared latents.

With ``public-labels`` false the public split reaches the attacker as images only: its
``aux_y`` are then the final classifier's own predictions on the aux images (pseudo-labels, as
a real attacker holding the model would make them; ``aux_labels`` says which), never the true
labels.

The private records an attack is scored against (``Truth``) are not here: only
``fedlatent.attacks.scoring`` reads them (a test checks every other attack module).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedlatent.config import RunConfig
from fedlatent.data.store import cached_dataset
from fedlatent.federation.server_view import load_server_view
from fedlatent.learning.models import Encoder
from fedlatent.plan import build_classifier, release_noise_std

_UPLOAD = re.compile(r"received/(?P<phase>[a-z-]+)-r(?P<rnd>\d+)-p(?P<pid>\d+)\.npz")
_SENT = re.compile(r"sent/(?P<phase>[a-z-]+)-r(?P<rnd>\d+)\.npz")
_LATENTS = re.compile(r"latents/p(?P<pid>\d+)\.npz")


@dataclass(frozen=True)
class Upload:
    """One accepted weight upload and the global weights it started from."""

    phase: str
    rnd: int
    partition: int
    weights: dict[str, np.ndarray]
    start: dict[str, np.ndarray] | None  # what the server sent that round (None: not recorded)


@dataclass(eq=False)
class AttackerView:
    """Everything the honest-but-curious server holds after a run (see module docstring)."""

    cfg: RunConfig
    aux_x: np.ndarray
    aux_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    encoder_state: dict[str, np.ndarray] | None
    final_state: dict[str, np.ndarray]
    uploads: list[Upload] = field(default_factory=list)
    latents: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    aux_labels: str = "public"  # where aux_y comes from: "public" (known labels) or "pseudo" (the final model)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape of one image, (C, H, W)."""
        c, h, w = self.aux_x.shape[1:]
        return (int(c), int(h), int(w))

    def encoder(self) -> Encoder | None:
        """The frozen encoder the server knows (None for ``local`` encoders or ``raw``)."""
        if self.encoder_state is None:
            return None
        enc = Encoder(
            image_shape=self.image_shape,
            latent_dim=self.cfg.feature_dim,
            arch=self.cfg.encoder_arch,
            cache_dir="",
            seed_bugs=self.cfg.seed_bugs,
        )
        enc.load_state_dict({k: torch.from_numpy(v) for k, v in self.encoder_state.items()})
        return enc.eval()

    def classifier(self, state: dict[str, np.ndarray] | None = None) -> nn.Module:
        """The run's classifier architecture with the final (or the given) weights."""
        from fedlatent.data.loading import Dataset

        ds = Dataset("aux", self.aux_x[:1], self.aux_y[:1], self.test_x[:1], self.test_y[:1], self.num_classes)
        model = build_classifier(self.cfg, ds)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in (state or self.final_state).items()})
        return model.eval()

    def latent_noise_std(self) -> float:
        """The per-coordinate std of the latent release (0 without DP): a public setting."""
        cfg = self.cfg
        if cfg.mode != "latent-share" or not cfg.dp:
            return 0.0
        return release_noise_std(cfg)  # the clients' own calibration (epsilon minus a DP encoder's share)


def load_attacker_view(run_dir: str | Path) -> AttackerView:
    """Build the attacker's view of a finished run from ``run_dir/server_view`` + public data.

    The data set is loaded to take the public split (indices in ``public_index.npy``) and the
    test split; the private records are dropped before this function returns.
    """
    raw = load_server_view(Path(run_dir) / "server_view")
    cfg = RunConfig.from_run_config(raw["manifest"]["settings"])
    ds = cached_dataset(cfg.dataset, data_dir=cfg.data_dir or None, max_train=cfg.max_train)
    public = np.asarray(raw["public_index"])
    sent = {(m["phase"], int(m["rnd"])): raw[rel] for rel in raw if (m := _SENT.fullmatch(rel))}
    uploads = []
    for rel in sorted(raw):
        if m := _UPLOAD.fullmatch(rel):
            phase, rnd = m["phase"], int(m["rnd"])
            uploads.append(Upload(phase, rnd, int(m["pid"]), raw[rel], sent.get((phase, rnd))))
    latents = {
        int(m["pid"]): (raw[rel]["latents"], raw[rel]["labels"]) for rel in raw if (m := _LATENTS.fullmatch(rel))
    }
    view = AttackerView(
        cfg=cfg,
        aux_x=ds.x_train[public].copy(),
        # Without public labels the attacker never sees them: a placeholder until pseudo_labelled.
        aux_y=ds.y_train[public].copy() if cfg.public_labels else np.zeros(len(public), dtype=ds.y_train.dtype),
        test_x=ds.x_test,
        test_y=ds.y_test,
        num_classes=ds.num_classes,
        encoder_state=raw.get("encoder.npz"),
        final_state=raw["final_model.npz"],
        uploads=uploads,
        latents=latents,
    )
    return view if cfg.public_labels else pseudo_labelled(view)


def pseudo_labelled(view: AttackerView) -> AttackerView:
    """The view with ``aux_y`` replaced by the final classifier's predictions on the aux images.

    The classifier reads images in ``raw`` (and ``public-only``), latents of the server's encoder
    otherwise; with no encoder at the server (``local``) the aux images cannot be labelled by it
    and every aux label is the most frequent label the server received (or 0).
    """
    inputs: torch.Tensor | None = torch.from_numpy(view.aux_x)
    if view.cfg.is_latent:
        enc = view.encoder()
        inputs = None if enc is None else enc(inputs).detach()
    if inputs is None:
        shared = [y for _, y in view.latents.values()]
        counts = np.bincount(np.concatenate(shared).astype(np.int64), minlength=1) if shared else np.zeros(1)
        guess = np.full(len(view.aux_x), int(counts.argmax()), dtype=view.aux_y.dtype)
    else:
        with torch.no_grad():
            guess = view.classifier()(inputs).argmax(1).numpy().astype(view.aux_y.dtype)
    return dataclasses.replace(view, aux_y=guess, aux_labels="pseudo")
