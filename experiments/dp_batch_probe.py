"""Probe: which DP-SGD batch size and learning rate suit one client's budget?

What: one client's share of Fashion-MNIST (``--records``, default 4,800 = 48k private / 10
clients) trained with ``dp_fit`` for the epochs a run plans (rounds x local-epochs), noise
calibrated for ``--epsilon`` exactly as ``client_dp.plan_round`` does, for every batch size x
learning rate; test accuracy per setting to ``--out`` (JSON). Centralized on one client, so
pessimistic against FedAvg of 10 noisy clients, but it ranks the settings.

Why: DP-SGD's noise on the averaged gradient is ``sigma * C / batch``; at a fixed budget a
larger batch raises sigma only slowly, so the signal-to-noise ratio of the small default
batch (32, tuned for non-private training) can be far from the best.

    python experiments/dp_batch_probe.py --model image-mlp --batch-sizes 32 256 1024 --lrs 1e-3 3e-3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fedlatent.data.loading import load_dataset
from fedlatent.learning.models import ImageClassifier
from fedlatent.learning.training import classification_losses, evaluate
from fedlatent.privacy.accounting import calibrate_noise_multiplier
from fedlatent.privacy.dp_sgd import dp_fit, dp_steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--records", type=int, default=4800)
    ap.add_argument("--epochs", type=int, default=50, help="rounds x local-epochs of the run")
    ap.add_argument("--epsilon", type=float, default=3.0)
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 256, 1024])
    ap.add_argument("--lrs", nargs="+", type=float, default=[1e-3, 3e-3])
    ap.add_argument("--out", type=Path, default=Path("runs/dp-batch-probe.json"))
    args = ap.parse_args()
    data = load_dataset(args.dataset)
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(data.y_train), generator=g)[: args.records]
    x, y = torch.from_numpy(data.x_train)[pick], torch.from_numpy(data.y_train)[pick]
    tx, ty = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    rows = []
    for batch in args.batch_sizes:
        rate = min(1.0, batch / len(x))
        steps = dp_steps(epochs=args.epochs, sample_rate=rate)
        sigma = calibrate_noise_multiplier(
            target_epsilon=args.epsilon, delta=args.delta, sample_rate=rate, steps=steps, accountant="rdp"
        )
        for lr in args.lrs:
            torch.manual_seed(0)
            model = ImageClassifier(image_shape=data.image_shape, num_classes=data.num_classes)
            start = time.time()
            dp_fit(
                model, x, y, record_loss_fn=classification_losses, epochs=args.epochs, batch_size=batch, lr=lr,
                noise_multiplier=sigma, max_grad_norm=args.clip, generator=torch.Generator().manual_seed(1),
            )  # fmt: skip
            acc = evaluate(model, tx, ty)[1]
            rows.append({"batch_size": batch, "lr": lr, "noise_multiplier": sigma, "steps": steps, "accuracy": acc,
                         "seconds": time.time() - start})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
