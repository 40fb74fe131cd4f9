"""Tests for fedlatent.learning.progress: throttled lines with a bar, counts, ETA; training reports epochs."""

from __future__ import annotations

import torch

from fedlatent.learning.models import LatentClassifier
from fedlatent.learning.progress import Progress, bar
from fedlatent.learning.training import train_classifier


def test_bar_is_proportional_and_padded():
    assert bar(0, 10, width=10) == "[          ]"
    assert bar(5, 10, width=10) == "[━━━━━     ]"
    assert bar(10, 10, width=10) == "[━━━━━━━━━━]"
    assert bar(20, 10, width=10) == bar(10, 10, width=10)  # never past full


def test_lines_are_throttled_but_the_last_is_always_written():
    lines: list[str] = []
    progress = Progress("public autoencoder", 30, log=lines.append, every=3600)
    for epoch in range(1, 31):
        progress(epoch, loss=1 / epoch)
    assert len(lines) == 2  # the first, then only the last within the hour
    assert lines[0].startswith("public autoencoder [") and "1/30 epochs" in lines[0]
    assert "30/30 epochs" in lines[1] and "loss 0.0333" in lines[1] and "< 0:00:00" in lines[1]


def test_training_reports_every_epoch_with_its_loss():
    seen: list[tuple[int, float]] = []
    x, y = torch.randn(64, 4), torch.arange(64) % 2
    loss = train_classifier(
        LatentClassifier(latent_dim=4, num_classes=2), x, y, epochs=3, batch_size=16, lr=1e-2,
        generator=torch.Generator().manual_seed(0), on_epoch=lambda e, loss: seen.append((e, loss)),
    )  # fmt: skip
    assert [e for e, _ in seen] == [1, 2, 3] and seen[-1][1] == loss


def test_a_short_phase_stays_silent():
    lines: list[str] = []
    progress = Progress("set_encoder", 2, unit="replies", log=lines.append, after=3600)
    progress(1)
    progress(2)
    assert lines == []


def test_progress_lines_reach_the_current_stderr(capsys):
    import logging

    from fedlatent.learning.progress import show_log

    show_log()
    Progress("attack: inverse network", 1)(1)
    logging.getLogger("fedlatent").info("plain line")
    err = capsys.readouterr().err
    assert "fedlatent: attack: inverse network [" in err and "fedlatent: plain line" in err
