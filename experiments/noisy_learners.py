"""Probe: which server learner and release settings work for DP ``latent-share``?

What: trains a public autoencoder on the public split (20%) of a dataset, encodes the private
and test images, simulates the release of every private latent (clip to ``C`` + Gaussian noise
calibrated by ``latent_noise_std`` for each ε, δ) and scores each learner of
``fedlatent.learners`` on the *clean* test latents. Levers explored cheaply: the latent size,
the clip ``C`` as a quantile of the public latent norms, and centring the latents on the public
mean before clipping (public statistics only, so no privacy cost). Writes ``results.json`` and
``accuracy.png`` (accuracy vs ε per learner and setting) in ``--out``.

Why: the naive MLP on noisy latents collapses at small ε; this measures by how much noise-aware
learners and a better-placed clip fix that, to choose defaults for the real federation.

    python experiments/noisy_learners.py --ae-epochs 15 --out runs/noisy-learners
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch

from fedlatent.data.loading import load_dataset
from fedlatent.data.partition import public_private_split
from fedlatent.learning.models import Autoencoder
from fedlatent.learning.training import encode, evaluate, train_autoencoder
from fedlatent.privacy.learners import fit_server_learner
from fedlatent.privacy.mechanisms import gaussian_release, latent_noise_std, randomized_response

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)

T0 = time.perf_counter()


def say(msg: str) -> None:
    """Progress line with the elapsed time."""
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def latents_for(args: argparse.Namespace, dim: int) -> dict[str, np.ndarray]:
    """Public, private and test latents (and labels) under a public encoder; cached in ``--out``."""
    cache = Path(args.out) / f"latents-{args.dataset}-d{dim}-e{args.ae_epochs}-s{args.seed}-n{args.max_train}.npz"
    if cache.is_file():
        say(f"d={dim}: cached latents {cache}")
        return dict(np.load(cache))
    ds = load_dataset(args.dataset, max_train=args.max_train)
    pub, priv = public_private_split(ds.y_train, public_fraction=args.public_fraction, seed=args.seed)
    torch.manual_seed(args.seed)
    ae = Autoencoder(image_shape=ds.x_train.shape[1:], latent_dim=dim)
    x_pub = torch.from_numpy(ds.x_train[pub])
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    loss = train_autoencoder(ae, x_pub, epochs=args.ae_epochs, batch_size=args.ae_batch, lr=1e-3, generator=gen)
    say(f"d={dim}: autoencoder on {len(pub)} public images, loss {loss:.4f}, {time.perf_counter() - start:.0f}s")
    out = {
        "z_pub": encode(ae.encoder, x_pub).numpy(),
        "z_priv": encode(ae.encoder, torch.from_numpy(ds.x_train[priv])).numpy(),
        "y_priv": ds.y_train[priv],
        "z_test": encode(ae.encoder, torch.from_numpy(ds.x_test)).numpy(),
        "y_test": ds.y_test,
    }
    np.savez(cache, **out)  # type: ignore[arg-type]
    return out


Setting = tuple[str, float, "np.ndarray | None", "np.ndarray | None"]


def settings(args: argparse.Namespace, z_pub: np.ndarray, dim: int) -> list[Setting]:
    """(name, clip, public centre, public projection) of the release settings probed at this size.

    Clips are quantiles of the public latent norms (after the same centring/projection), and
    "white-k" projects on the top-k public principal axes scaled to unit variance.
    """
    mean = z_pub.mean(0)
    _, sing, vh = np.linalg.svd(z_pub - mean, full_matrices=False)
    out: list[Setting] = [("raw C=1", 1.0, None, None)]
    quantiles = args.quantiles if dim == args.sweep_dim else [0.5]
    for q in quantiles:
        out.append((f"raw C=q{q:g}", float(np.quantile(np.linalg.norm(z_pub, axis=1), q)), None, None))
        out.append((f"centred C=q{q:g}", float(np.quantile(np.linalg.norm(z_pub - mean, axis=1), q)), mean, None))
    for k in sorted({dim // 2, dim}):
        proj = (vh[:k] / (sing[:k, None] / np.sqrt(len(z_pub) - 1))).astype(np.float32)
        clip = float(np.quantile(np.linalg.norm((z_pub - mean) @ proj.T, axis=1), 0.5))
        out.append((f"white-{k} C=q0.5", clip, mean, proj))
    return out


def main() -> None:
    """Run the probe; print a table and write ``results.json`` and ``accuracy.png``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--public-fraction", type=float, default=0.2)
    p.add_argument("--max-train", type=int, default=0, help="stratified subset of the training set (0: all)")
    p.add_argument("--latent-dims", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--sweep-dim", type=int, default=32, help="latent size whose clip quantiles are swept")
    p.add_argument("--quantiles", type=float, nargs="+", default=[0.1, 0.5, 0.9])
    p.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0, math.inf])
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--label-epsilon", type=float, default=2.0, help="extra lda run with randomized response")
    p.add_argument("--ae-epochs", type=int, default=15)
    p.add_argument("--ae-batch", type=int, default=64)
    p.add_argument("--mlp", action=argparse.BooleanOptionalAction, default=True, help="also fit the naive MLP")
    p.add_argument("--mlp-epochs", type=int, default=5)
    p.add_argument("--mlp-batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/noisy-learners")
    args = p.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # the probe shares a small machine

    rows: list[dict[str, float | int | str]] = []
    for dim in args.latent_dims:
        data = latents_for(args, dim)
        z_priv, y_priv = torch.from_numpy(data["z_priv"]), torch.from_numpy(data["y_priv"])
        z_test, y_test = torch.from_numpy(data["z_test"]), torch.from_numpy(data["y_test"])
        norms = np.linalg.norm(data["z_pub"], axis=1)
        say(f"d={dim}: public latent norms q10/q50/q90 = {np.quantile(norms, [0.1, 0.5, 0.9]).round(2).tolist()}")
        for name, clip, centre, proj in settings(args, data["z_pub"], dim):
            c = None if centre is None else torch.from_numpy(centre)
            pr = None if proj is None else torch.from_numpy(proj)
            base = z_priv - c if c is not None else z_priv
            base = base @ pr.T if pr is not None else base
            for eps in args.epsilons:
                std = 0.0 if math.isinf(eps) else latent_noise_std(epsilon=eps, delta=args.delta, clip=clip)
                gen = torch.Generator().manual_seed(args.seed + 1)
                z_rel = gaussian_release(base, clip=clip, std=std, generator=gen)
                runs = [("class-mean", math.inf), ("lda", math.inf), ("lda", args.label_epsilon)]
                if args.mlp and dim == args.sweep_dim and name in ("raw C=1", "centred C=q0.5"):
                    runs.append(("mlp", math.inf))
                for kind, label_eps in runs:
                    y_rel = y_priv
                    if not math.isinf(label_eps):
                        y_rel = randomized_response(y_priv, epsilon=label_eps, num_classes=10, generator=gen)
                    start = time.perf_counter()
                    model = fit_server_learner(
                        z_rel,
                        y_rel,
                        kind=kind,
                        num_classes=10,
                        clip=clip,
                        noise_std=std,
                        label_epsilon=label_eps,
                        center=c,
                        projection=pr,
                        epochs=args.mlp_epochs,
                        batch_size=args.mlp_batch,
                        generator=torch.Generator().manual_seed(args.seed),
                    )
                    acc = evaluate(model, z_test, y_test)[1]
                    learner = kind if math.isinf(label_eps) else f"{kind} (label-eps {label_eps:g})"
                    row = {"dim": dim, "setting": name, "clip": clip, "epsilon": eps, "noise_std": std}
                    rows.append({**row, "learner": learner, "accuracy": acc, "seconds": time.perf_counter() - start})
                    say(f"d={dim} {name:16s} C={clip:6.2f} eps={eps:<4g} sigma={std:7.3f} {learner:22s} acc={acc:.4f}")

    out = Path(args.out)
    meta = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in vars(args).items()}
    clean = [{k: (str(v) if isinstance(v, float) and math.isinf(v) else v) for k, v in r.items()} for r in rows]
    (out / "results.json").write_text(json.dumps({"args": meta, "rows": clean}, indent=1))
    plot(rows, args, out / "accuracy.png")
    say(f"wrote {out / 'results.json'} and {out / 'accuracy.png'}")


def plot(rows: list[dict[str, float | int | str]], args: argparse.Namespace, path: Path) -> None:
    """One panel per latent size: accuracy vs ε (inf drawn at the right) per learner and setting."""
    eps_pos = {e: i for i, e in enumerate(sorted(args.epsilons))}
    fig, axes = plt.subplots(1, len(args.latent_dims), figsize=(6 * len(args.latent_dims), 4.5), squeeze=False)
    for ax, dim in zip(axes[0], args.latent_dims, strict=True):
        series = sorted({(str(r["setting"]), str(r["learner"])) for r in rows if r["dim"] == dim})
        for setting, learner in series:
            pts = [r for r in rows if (r["dim"], r["setting"], r["learner"]) == (dim, setting, learner)]
            ax.plot([eps_pos[float(r["epsilon"])] for r in pts], [r["accuracy"] for r in pts], marker="o", lw=1,
                    label=f"{setting} / {learner}")  # fmt: skip
        ax.set_xticks(range(len(eps_pos)), [f"{e:g}" for e in sorted(args.epsilons)])
        ax.set(xlabel=f"latent ε (δ={args.delta:g})", ylabel="test accuracy", title=f"latent dim {dim}", ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
