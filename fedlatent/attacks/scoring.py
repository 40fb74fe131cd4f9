"""Scoring of the attacks: the only attack code that reads the clients' private records.

What: each ``score_*`` compares an attack's output with the ``Truth`` (the private partitions
from ``private_index/``) beside trivial baselines; ``candidates`` draws the membership game's
candidates from it. Why apart: the attack modules (``inversion``, ``gradient``, ``membership``,
``model_inversion``) never import ``Truth`` at all, so an attack cannot peek at what it is
scored on (a test checks their imports); ``run.py`` calls an attack, then its scorer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedlatent.attacks.gradient import GradientInversion
from fedlatent.attacks.inversion import Reconstructions
from fedlatent.attacks.metrics import aux_class_means, mia_scores, psnr, ssim, summarize, trivial_baselines
from fedlatent.attacks.model_inversion import ModelInversion
from fedlatent.attacks.view import AttackerView
from fedlatent.config import RunConfig
from fedlatent.data.store import cached_dataset
from fedlatent.learning import seeding
from fedlatent.learning.models import ImageClassifier
from fedlatent.learning.training import encode, train_classifier


@dataclass(frozen=True, eq=False)
class Truth:
    """The clients' private records, for scoring attacks only (never passed to one)."""

    client_x: dict[int, np.ndarray]
    client_y: dict[int, np.ndarray]
    aux_y: np.ndarray | None = None  # the public split's true labels (None: the view's are true)


def load_truth(run_dir: str | Path) -> Truth:
    """Private records of every client, from ``private_index/`` and the data set."""
    run_dir = Path(run_dir)
    settings = json.loads((run_dir / "server_view" / "manifest.json").read_text())["settings"]
    cfg = RunConfig.from_run_config(settings)
    ds = cached_dataset(cfg.dataset, data_dir=cfg.data_dir or None, max_train=cfg.max_train)
    xs, ys = {}, {}
    for path in sorted((run_dir / "private_index").glob("client_*.npy")):
        pid = int(path.stem.split("_")[1])
        idx = np.load(path)
        xs[pid], ys[pid] = ds.x_train[idx], ds.y_train[idx]
    public = np.load(run_dir / "server_view" / "public_index.npy")
    return Truth(client_x=xs, client_y=ys, aux_y=ds.y_train[public].copy())


def _true_aux(truth: Truth, view: AttackerView) -> np.ndarray:
    """The aux records' true labels: the scorer's recognizer learns from them, not from pseudo-labels."""
    return view.aux_y if truth.aux_y is None else truth.aux_y


def score_inversion(
    rec: Reconstructions, truth: Truth, view: AttackerView, *, recognizer_epochs: int = 30, seed: int = 0
) -> dict[str, Any]:
    """PSNR/SSIM of reconstructions against the private records, beside the trivial baselines.

    Returns a dict with mean ``psnr``/``ssim`` over all records, ``per_partition`` means,
    ``baselines`` (``metrics.trivial_baselines``: aux mean, and aux class mean of the *shared*
    label, the one that reached the server), ``recognition_accuracy`` (an MLP image classifier
    trained on raw aux images predicting the records' *true* labels from the reconstructions),
    ``baseline_recognition_accuracy`` (the same classifier on the aux class-mean images of the
    shared labels), ``recognizer_accuracy_private`` (its accuracy on the true records, the
    ceiling), ``leakage_ssim`` = attack SSIM minus the best baseline SSIM, and ``ssim_max`` (the best
    record) beside ``baseline_ssim_max`` (the best record of the class-mean guess).
    """
    pids = sorted(rec.images)
    if not pids:
        raise ValueError("no reconstructions to score")
    for pid in pids:
        if rec.images[pid].shape != truth.client_x[pid].shape:
            raise ValueError(
                f"partition {pid}: {rec.images[pid].shape} reconstructions for {truth.client_x[pid].shape} records"
            )
    recon = np.concatenate([rec.images[p] for p in pids])
    target = np.concatenate([truth.client_x[p] for p in pids])
    true_y = np.concatenate([truth.client_y[p] for p in pids])
    shared_y = np.concatenate([np.asarray(view.latents[p][1], dtype=np.int64) for p in pids])
    per_partition = {p: summarize(rec.images[p], truth.client_x[p]) for p in pids}
    baselines = trivial_baselines(target, shared_y, view.aux_x, view.aux_y)

    with seeding.seeded(seeding.generator(seed, 3)):
        recognizer = ImageClassifier(image_shape=view.image_shape, num_classes=view.num_classes)
    aux_x, aux_y = torch.from_numpy(view.aux_x), torch.from_numpy(_true_aux(truth, view))
    gen = seeding.generator(seed, 4)
    train_classifier(recognizer, aux_x, aux_y, epochs=recognizer_epochs, batch_size=64, lr=1e-3, generator=gen)
    recognizer.eval()

    def accuracy(images: np.ndarray) -> float:
        with torch.no_grad():
            pred = recognizer(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))).argmax(1).numpy()
        return float((pred == true_y).mean())

    per_record = ssim(recon, target)
    attack_ssim = float(per_record.mean())
    # The max over records, as instance-encoding attacks are reported (InstaHide challenge: mean
    # 0.43, max 0.90), beside the same max of the best label-aware baseline guess.
    guess = aux_class_means(view.aux_x, view.aux_y, view.num_classes)[shared_y]
    return {
        "ssim_max": float(per_record.max()),
        "baseline_ssim_max": float(ssim(guess, target).max()),
        "method": rec.method,
        "records": len(target),
        "psnr": float(psnr(recon, target).mean()),
        "ssim": attack_ssim,
        "per_partition": per_partition,
        "baselines": baselines,
        "recognition_accuracy": accuracy(recon),
        "baseline_recognition_accuracy": accuracy(aux_class_means(view.aux_x, view.aux_y, view.num_classes)[shared_y]),
        "recognizer_accuracy_private": accuracy(target),
        "leakage_ssim": attack_ssim - max(b["ssim"] for b in baselines.values()),
    }


def _best_match(recon: np.ndarray, records: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per reconstruction: SSIM and PSNR against the private record of maximal SSIM, and its index."""
    best_s, best_p, best_i = [], [], []
    for r in recon:
        scores = ssim(np.broadcast_to(r, records.shape), records)
        i = int(np.argmax(scores))
        best_s.append(scores[i])
        best_p.append(psnr(r[None], records[i : i + 1])[0])
        best_i.append(i)
    return np.array(best_s), np.array(best_p), np.array(best_i, dtype=np.int64)


def _best_cosine(z: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per row of ``z``: the largest cosine similarity with any row of ``true``."""
    a = z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-12)
    b = true / (np.linalg.norm(true, axis=1, keepdims=True) + 1e-12)
    return (a @ b.T).max(axis=1)


def _means(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of every score over the rows that have it."""
    keys = dict.fromkeys(k for row in rows for k in row)
    return {k: float(np.mean([row[k] for row in rows if k in row])) for k in keys}


def score_gradient_inversion(out: GradientInversion, truth: Truth, view: AttackerView) -> dict[str, Any]:
    """Score reconstructions against the uploading client's private records.

    An update mixes many records, so each reconstruction is compared with the client's
    record it resembles most (max SSIM). The aux mean image and the aux class mean of the
    recovered label get the same best-match treatment (trivial baselines), and
    ``leakage_*`` is attack minus the aux-mean baseline. Recovered latents are compared
    (best cosine) with the client's true latents when the server's encoder can produce them,
    beside the aux mean latent as their baseline. ``ssim_max`` is the best reconstruction's
    best-match SSIM. Scores absent for a run are ``None``.
    """
    aux_mean = view.aux_x.mean(axis=0)
    class_means = aux_class_means(view.aux_x, view.aux_y, view.num_classes)
    encoder = view.encoder()
    base_z = None if encoder is None else encode(encoder, torch.from_numpy(view.aux_x)).numpy().mean(0, keepdims=True)
    per_upload: dict[str, dict[str, float]] = {}
    rows: list[dict[str, float]] = []
    for key in sorted(set(out.images) | set(out.latents)):
        rnd, pid = key
        records, labels = truth.client_x[pid], out.labels[key]
        upload_rows: list[dict[str, float]] = [{} for _ in labels]
        if key in out.images:
            s, p, idx = _best_match(out.images[key], records)
            bs, bp, _ = _best_match(aux_mean[None], records)
            cs, cp, _ = _best_match(class_means[labels], records)
            for j, row in enumerate(upload_rows):
                row.update(ssim=s[j], psnr=p[j], baseline_ssim=bs[0], baseline_psnr=bp[0])
                row.update(class_mean_ssim=cs[j], class_mean_psnr=cp[j])
                row["label_match"] = float(labels[j] == truth.client_y[pid][idx[j]])
        if key in out.latents and encoder is not None and base_z is not None:
            true = encode(encoder, torch.from_numpy(records)).numpy()
            cos, bcos = _best_cosine(out.latents[key], true), _best_cosine(base_z, true)
            for j, row in enumerate(upload_rows):
                row.update(latent_cosine=cos[j], baseline_latent_cosine=bcos[0])
        per_upload[f"r{rnd}-p{pid}"] = _means(upload_rows)
        rows += upload_rows
    m: dict[str, float | None] = dict(_means(rows))
    names = ("ssim", "psnr", "label_match", "latent_cosine", "baseline_latent_cosine")
    res: dict[str, Any] = {"attack": "gradient_inversion", "reconstructions": len(rows)}
    res["ssim_max"] = max((r["ssim"] for r in rows if "ssim" in r), default=None)
    res.update({k: m.get(k) for k in names})
    for name, prefix in (("baseline_aux_mean", "baseline_"), ("baseline_aux_class_mean", "class_mean_")):
        res[name] = {k: m.get(prefix + k) for k in ("ssim", "psnr")}
    for k in ("ssim", "psnr"):
        a, b = m.get(k), m.get("baseline_" + k)
        res["leakage_" + k] = None if a is None or b is None else a - b
    return {**res, "per_upload": per_upload, "settings": dict(out.settings)}


def score_model_inversion(out: ModelInversion, truth: Truth, view: AttackerView) -> dict[str, Any]:
    """SSIM/PSNR of each representative against the class mean of the private records.

    Private records of all clients are pooled; classes with no private record are skipped.
    The baseline is the aux class mean against the same private class means. It is high (on
    8x8 digits SSIM is typically above 0.9: two means of one distribution look alike), so the
    representative leaks only insofar as it beats it: ``leakage_ssim`` = SSIM - baseline SSIM.

    Returns
    -------
    dict
        ``ssim``, ``psnr`` (means over classes), ``per_class`` (class -> ssim, psnr and the
        baseline's), ``baseline`` (``{"aux_class_mean": {"ssim", "psnr"}}``), ``leakage_ssim``.
    """
    x = np.concatenate([truth.client_x[p] for p in sorted(truth.client_x)])
    y = np.concatenate([truth.client_y[p] for p in sorted(truth.client_y)])
    classes = [c for c in range(view.num_classes) if (y == c).any() and (view.aux_y == c).any()]
    if not classes:
        raise ValueError("no class has both private and aux records")
    target = np.stack([x[y == c].mean(axis=0) for c in classes]).astype(np.float32)
    baseline = aux_class_means(view.aux_x, view.aux_y, view.num_classes)[classes]
    recon = out.images[classes]
    s, p = ssim(recon, target), psnr(recon, target)
    bs, bp = ssim(baseline, target), psnr(baseline, target)
    per_class = {
        c: {"ssim": float(s[i]), "psnr": float(p[i]), "baseline_ssim": float(bs[i]), "baseline_psnr": float(bp[i])}
        for i, c in enumerate(classes)
    }
    return {
        "ssim": float(s.mean()),
        "psnr": float(p.mean()),
        "per_class": per_class,
        "baseline": {"aux_class_mean": {"ssim": float(bs.mean()), "psnr": float(bp.mean())}},
        "leakage_ssim": float(s.mean() - bs.mean()),
    }


def candidates(truth: Truth, view: AttackerView, *, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n`` shuffled candidates, ``n // 2`` members and the rest non-members.

    Members come uniformly from all clients' private records; non-members from the test
    split, which no client trained on. Only the returned ``x`` and ``y`` go to an attack.

    Returns
    -------
    (x, y, is_member) : tuple of ndarray
        Images ``(n, C, H, W)``, int64 labels and a bool membership mask, in shuffled order.

    Raises
    ------
    ValueError
        If there are fewer private or test records than the draw needs.
    """
    pids = sorted(truth.client_x)
    pool_x = np.concatenate([truth.client_x[p] for p in pids]) if pids else view.test_x[:0]
    pool_y = np.concatenate([truth.client_y[p] for p in pids]) if pids else view.test_y[:0]
    n_in, n_out = n // 2, n - n // 2
    if n < 2 or n_in > len(pool_x) or n_out > len(view.test_x):
        raise ValueError(
            f"need 2 <= n with n//2 <= {len(pool_x)} private and n - n//2 <= {len(view.test_x)} test records, got n={n}"
        )
    rng = np.random.default_rng(seed)
    members = rng.choice(len(pool_x), n_in, replace=False)
    others = rng.choice(len(view.test_x), n_out, replace=False)
    x = np.concatenate([pool_x[members], view.test_x[others]])
    y = np.concatenate([pool_y[members], view.test_y[others]]).astype(np.int64)
    is_member = np.arange(n) < n_in
    order = rng.permutation(n)
    return x[order], y[order], is_member[order]


def score_membership(scores: np.ndarray, is_member: np.ndarray) -> dict[str, float]:
    """AUC and TPR at 1% / 0.1% FPR of membership scores (``metrics.mia_scores``)."""
    scores, is_member = np.asarray(scores, dtype=np.float64), np.asarray(is_member, dtype=bool)
    if scores.shape != is_member.shape:
        raise ValueError(f"scores {scores.shape} and is_member {is_member.shape} differ in shape")
    out = mia_scores(scores[is_member], scores[~is_member])
    return {**out, "members": float(is_member.sum()), "non_members": float((~is_member).sum())}
