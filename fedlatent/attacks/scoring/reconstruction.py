"""Scores of the reconstruction attacks (latent, gradient and model inversion) against the Truth.

Every family's headline follows one rule (``attacks.leakage.beyond_baselines``): ``leakage_ssim``
is the attack's SSIM minus that of the strongest trivial baseline, each baseline scored by
exactly the attack's protocol, with its interval, n, the winning baseline's name and the
breakdown. The baselines are what the attacker produces from what it holds, with no leak:

- ``aux_mean``: the mean public image;
- ``aux_class_mean``: the public class mean of the label the attacker has (the shared label in
  latent-share, the recovered label of a gradient inversion, the class a model inversion targets);
- ``nearest_public``: the public image nearest (pixel L2) to the attack's own reconstruction,
  what snapping the output to the public set would give.

Individual leakage (the stranger test, ``attacks.leakage.stranger_test``) compares each
reconstruction with its source and with class-matched records the server never saw from that
client (``truth.strangers``). A model inversion targets a class mean by design: no stranger test.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fedlatent.attacks.gradient import GradientInversion
from fedlatent.attacks.inversion import Reconstructions
from fedlatent.attacks.leakage import beyond_baselines, stranger_test
from fedlatent.attacks.metrics import aux_class_means, psnr, ssim, ssim_matrix, summarize
from fedlatent.attacks.model_inversion import ModelInversion
from fedlatent.attacks.scoring.truth import Truth, strangers, true_aux
from fedlatent.attacks.view import AttackerView
from fedlatent.learning import seeding
from fedlatent.learning.models import ImageClassifier
from fedlatent.learning.training import encode, train_classifier

NEIGHBOURS = 9  # class-matched strangers each latent reconstruction's source is ranked among
RANK_RECORDS = 1000  # records per client (all clients alike) for the uploader's rank


def nearest_public(images: np.ndarray, aux_x: np.ndarray) -> np.ndarray:
    """Index of the public image nearest (pixel L2) to each image."""
    a = aux_x.reshape(len(aux_x), -1).astype(np.float64)
    r = np.clip(images, 0.0, 1.0).reshape(len(images), -1).astype(np.float64)
    return np.argmin((a * a).sum(1)[None] - 2 * r @ a.T, axis=1)


def _guesses(recon: np.ndarray, labels: np.ndarray, view: AttackerView) -> dict[str, np.ndarray]:
    """The trivial baselines' guess for each reconstruction (see module docstring)."""
    means = aux_class_means(view.aux_x, view.aux_y, max(view.num_classes, int(labels.max(initial=0)) + 1))
    return {
        "aux_mean": np.broadcast_to(view.aux_x.mean(axis=0), recon.shape),
        "aux_class_mean": means[labels],
        "nearest_public": view.aux_x[nearest_public(recon, view.aux_x)],
    }


def score_inversion(
    rec: Reconstructions, truth: Truth, view: AttackerView, *, recognizer_epochs: int = 30, seed: int = 0
) -> dict[str, Any]:
    """Latent inversion: each reconstruction against the record its latent came from.

    Returns mean ``psnr``/``ssim``, ``per_partition`` means, ``baselines`` (PSNR/SSIM of each
    trivial guess), the headline (``leakage_ssim`` and its fields, see module docstring),
    ``individual`` (the stranger test: the record against ``NEIGHBOURS`` class-matched strangers),
    ``ssim_max`` beside ``baseline_ssim_max`` (the best record of the class-mean guess), and
    ``recognition_accuracy``: an MLP trained on the raw aux images predicting the records' true
    labels from the reconstructions, beside the same on the class-mean guesses and on the true
    records (``recognizer_accuracy_private``, the ceiling).
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
    guesses = _guesses(recon, shared_y, view)
    attack = ssim(recon, target)
    base = {name: ssim(g, target) for name, g in guesses.items()}  # each guess scored once, used three times
    headline = beyond_baselines(attack, base)

    rng = np.random.default_rng([seed, 24])
    others = []
    for pid in pids:  # per partition: NEIGHBOURS strangers of each record's class
        own_y = np.repeat(truth.client_y[pid], NEIGHBOURS)
        far = strangers(truth, view, pid, own_y, rng)
        others.append(ssim(np.repeat(rec.images[pid], NEIGHBOURS, axis=0), far).reshape(-1, NEIGHBOURS))
    far_scores = np.concatenate(others)
    individual = stranger_test(
        attack, far_scores[:, 0], member_scores=attack, nonmember_scores=far_scores[:, 0],
        ranks=1 + (far_scores > attack[:, None]).sum(1), candidates=NEIGHBOURS + 1,
    )  # fmt: skip

    with seeding.seeded(seeding.generator(seed, 3)):
        recognizer = ImageClassifier(image_shape=view.image_shape, num_classes=view.num_classes)
    aux_x, aux_y = torch.from_numpy(view.aux_x), torch.from_numpy(true_aux(truth, view))
    gen = seeding.generator(seed, 4)
    train_classifier(recognizer, aux_x, aux_y, epochs=recognizer_epochs, batch_size=64, lr=1e-3, generator=gen)
    recognizer.eval()

    def accuracy(images: np.ndarray) -> float:
        with torch.no_grad():
            pred = recognizer(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))).argmax(1).numpy()
        return float((pred == true_y).mean())

    return {
        "ssim_max": float(attack.max()),
        "baseline_ssim_max": float(base["aux_class_mean"].max()),
        "method": rec.method,
        "records": len(target),
        "psnr": float(psnr(recon, target).mean()),
        "ssim": float(attack.mean()),
        **headline,
        "individual": individual,
        "per_partition": {p: summarize(rec.images[p], truth.client_x[p]) for p in pids},
        "baselines": {
            name: {"psnr": float(psnr(g, target).mean()), "ssim": float(base[name].mean())}
            for name, g in guesses.items()
        },  # fmt: skip
        "recognition_accuracy": accuracy(recon),
        "baseline_recognition_accuracy": accuracy(guesses["aux_class_mean"]),
        "recognizer_accuracy_private": accuracy(target),
    }


def _rank(recon: np.ndarray, truth: Truth, pid: int, rng: np.random.Generator) -> np.ndarray:
    """Rank (1 = best) of client ``pid`` among all clients by each reconstruction's best match.

    Every client is represented by the same number of records (best matches over more records
    are higher), drawn uniformly.
    """
    m = min(RANK_RECORDS, *(len(x) for x in truth.client_x.values()))
    best = {p: ssim_matrix(recon, x[rng.choice(len(x), m, replace=False)]).max(1) for p, x in truth.client_x.items()}
    rank = np.ones(len(recon), dtype=np.int64)
    for p in best:
        rank += best[p] > best[pid]
    return rank


def score_gradient_inversion(
    out: GradientInversion, truth: Truth, view: AttackerView, *, seed: int = 0
) -> dict[str, Any]:
    """Score reconstructions against the uploading client's private records.

    An update mixes many records, so each reconstruction counts as its best match (max SSIM)
    among the uploader's records, and so does each baseline's guess. The stranger test takes the
    best match among as many class-matched strangers (same label counts, drawn per upload), with
    its interval over the uploading clients (their records are one draw each), ranks the uploader
    among all clients (``_rank``), and scores every record of either set by its best SSIM to the
    upload's reconstructions (AUC). Recovered latents are compared (best cosine) with the
    client's true latents when the server's encoder can produce them, beside the aux mean latent.
    """
    encoder = view.encoder()
    base_z = None if encoder is None else encode(encoder, torch.from_numpy(view.aux_x)).numpy().mean(0, keepdims=True)
    rng = np.random.default_rng([seed, 24])
    cols: dict[str, list[np.ndarray]] = {}
    per_upload: dict[str, dict[str, float]] = {}
    for key in sorted(set(out.images) | set(out.latents)):
        rnd, pid = key
        records, labels = truth.client_x[pid], np.asarray(out.labels[key], dtype=np.int64)
        row: dict[str, np.ndarray] = {}
        if key in out.images:
            recon = out.images[key]
            sims = ssim_matrix(recon, records)
            idx = sims.argmax(1)
            row.update(ssim=sims.max(1), psnr=psnr(recon, records[idx]))
            row["label_match"] = (labels == truth.client_y[pid][idx]).astype(np.float64)
            for name, guess in _guesses(recon, labels, view).items():
                row[name] = ssim_matrix(guess, records).max(1)
            far = ssim_matrix(recon, strangers(truth, view, pid, truth.client_y[pid], rng))
            row.update(stranger=far.max(1), rank=_rank(recon, truth, pid, rng), client=np.full(len(recon), pid))
            row.update(member=sims.max(0), nonmember=far.max(0))  # per record, over the upload's reconstructions
        if key in out.latents and encoder is not None and base_z is not None:
            true = encode(encoder, torch.from_numpy(records)).numpy()
            row["latent_cosine"] = _best_cosine(out.latents[key], true)
            row["baseline_latent_cosine"] = np.repeat(_best_cosine(base_z, true), len(out.latents[key]))
        skip = ("member", "nonmember", "client")
        per_upload[f"r{rnd}-p{pid}"] = {k: float(v.mean()) for k, v in row.items() if k not in skip}
        for k, v in row.items():
            cols.setdefault(k, []).append(np.asarray(v, dtype=np.float64))
    c = {k: np.concatenate(v) for k, v in cols.items()}
    res: dict[str, Any] = {
        "attack": "gradient_inversion",
        "reconstructions": sum(len(v) for v in out.labels.values()),
    }
    for k in ("ssim", "psnr", "label_match", "latent_cosine", "baseline_latent_cosine"):
        res[k] = float(c[k].mean()) if k in c else None
    res["ssim_max"] = float(c["ssim"].max()) if "ssim" in c else None
    res["leakage_ssim"] = res["individual"] = None
    if "ssim" in c:
        res |= beyond_baselines(c["ssim"], {k: c[k] for k in ("aux_mean", "aux_class_mean", "nearest_public")})
        res["individual"] = stranger_test(
            c["ssim"], c["stranger"], member_scores=c["member"], nonmember_scores=c["nonmember"],
            ranks=c["rank"], candidates=len(truth.client_x), clusters=c["client"],
        )  # fmt: skip
    return {**res, "per_upload": per_upload, "settings": dict(out.settings)}


def _best_cosine(z: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per row of ``z``: the largest cosine similarity with any row of ``true``."""
    a = z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-12)
    b = true / (np.linalg.norm(true, axis=1, keepdims=True) + 1e-12)
    return (a @ b.T).max(axis=1)


def score_model_inversion(out: ModelInversion, truth: Truth, view: AttackerView) -> dict[str, Any]:
    """SSIM/PSNR of each class representative against the class mean of the private records.

    Private records of all clients are pooled; classes with no private record are skipped. The
    baselines' guesses are scored against the same private class means. The aux class mean is
    high (two means of one distribution look alike), so a representative leaks only insofar as
    it beats it. The target is a class mean by design: there is no individual leakage to test.
    """
    x = np.concatenate([truth.client_x[p] for p in sorted(truth.client_x)])
    y = np.concatenate([truth.client_y[p] for p in sorted(truth.client_y)])
    classes = [c for c in range(view.num_classes) if (y == c).any() and (view.aux_y == c).any()]
    if not classes:
        raise ValueError("no class has both private and aux records")
    target = np.stack([x[y == c].mean(axis=0) for c in classes]).astype(np.float32)
    recon = out.images[classes]
    s, p = ssim(recon, target), psnr(recon, target)
    guesses = _guesses(recon, np.asarray(classes, dtype=np.int64), view)
    base = {name: ssim(g, target) for name, g in guesses.items()}
    bp = psnr(guesses["aux_class_mean"], target)
    per_class = {
        c: {"ssim": float(s[i]), "psnr": float(p[i]), "baseline_ssim": float(base["aux_class_mean"][i]),
            "baseline_psnr": float(bp[i])}
        for i, c in enumerate(classes)
    }  # fmt: skip
    return {
        "ssim": float(s.mean()),
        "psnr": float(p.mean()),
        "per_class": per_class,
        "baseline": {name: {"ssim": float(v.mean())} for name, v in base.items()},
        **beyond_baselines(s, base),
        "individual": None,  # the target is a class mean: nothing individual to find
    }
