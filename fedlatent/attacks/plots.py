"""Figures of the attacks: reconstruction grids and membership ROC curves (matplotlib, PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_grid(path: Path, rows: list[tuple[str, np.ndarray]], *, title: str) -> None:
    """Rows of images (label, (n, C, H, W) in [0, 1]) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.1 * cols + 1.4, 1.2 * len(rows) + 0.5), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(np.clip(images[c][0], 0, 1), cmap="gray", vmin=0, vmax=1)
        axes[r][0].set_title(label, fontsize=8, loc="left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_roc(path: Path, scores: dict[str, np.ndarray], is_member: np.ndarray, *, title: str) -> None:
    """ROC curves of membership scores on log-log axes (the low-FPR region is what matters)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(4.2, 4))
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(is_member.astype(int), s)
        ax.plot(np.maximum(fpr, 1e-4), np.maximum(tpr, 1e-4), label=name)
    ax.plot([1e-4, 1], [1e-4, 1], "k--", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
