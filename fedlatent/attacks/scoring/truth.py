"""The clients' private records, read for scoring only, and the draws made from them.

What: ``Truth`` (loaded from ``private_index/`` by ``load_truth``) holds every client's private
records; ``strangers`` draws records that the server never saw from one client, class-matched
to that client's records (the stranger test of ``attacks.leakage``); ``candidates`` draws the
membership game's candidates. Only ``attacks.scoring`` imports this (a test checks that no
attack module does), so an attack cannot peek at what it is scored on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedlatent.attacks.view import AttackerView
from fedlatent.config import RunConfig
from fedlatent.data.store import cached_dataset


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


def true_aux(truth: Truth, view: AttackerView) -> np.ndarray:
    """The aux records' true labels: the scorer's recognizer learns from them, not from pseudo-labels."""
    return view.aux_y if truth.aux_y is None else truth.aux_y


def strangers(truth: Truth, view: AttackerView, pid: int, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One record per label in ``labels`` that the server never saw from client ``pid``.

    Drawn from the other clients' records and the test split (which no client trained on), of
    the same class as each label, so that a class-typical guess scores alike on them and on the
    client's own records. Without replacement while a class lasts.
    """
    others = [p for p in sorted(truth.client_x) if p != pid]
    pool_x = np.concatenate([truth.client_x[p] for p in others] + [view.test_x])
    pool_y = np.concatenate([truth.client_y[p] for p in others] + [view.test_y]).astype(np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    out = np.empty((len(labels), *pool_x.shape[1:]), dtype=pool_x.dtype)
    for c in np.unique(labels):
        where, pool = np.flatnonzero(labels == c), np.flatnonzero(pool_y == c)
        if not len(pool):
            raise ValueError(f"no record of class {c} outside client {pid} to draw strangers from")
        out[where] = pool_x[rng.choice(pool, len(where), replace=len(where) > len(pool))]
    return out


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
