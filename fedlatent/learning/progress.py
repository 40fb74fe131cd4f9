"""Progress of long phases as log lines: a rich progress bar, counts, elapsed time and ETA.

What: ``Progress(desc, total)`` is called back once per unit of work (an epoch, a client) and
writes a line such as ``public autoencoder [━━━━━━╸        ]  8/30 epochs  0:00:21 < 0:00:57
loss 0.2810`` at most every ``every`` seconds, and always for the last unit.

Why lines, not a live bar: the ServerApp's output reaches the user through Flower's log
stream (``flwr run --stream``, ``fedlatent run``), which is not a terminal; rich's live
``Progress`` would only show its final state there. The bar itself is rich's ``ProgressBar``,
rendered to plain text.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress_bar import ProgressBar

_BAR_WIDTH = 24


def clock(seconds: float) -> str:
    """``seconds`` as ``h:mm:ss``."""
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def bar(done: int, total: int, width: int = _BAR_WIDTH) -> str:
    """A rich progress bar of ``done`` out of ``total`` as plain text, padded to ``width`` (no colours)."""
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False, legacy_windows=False)
    with console.capture() as capture:
        console.print(ProgressBar(total=max(total, 1), completed=min(done, total), width=width), end="")
    return f"[{capture.get():<{width}}]"  # uncoloured, rich leaves out the bar's remaining part


class Progress:
    """Log lines of a phase's progress (see module docstring).

    Parameters
    ----------
    desc : str
        What is running, e.g. "public autoencoder".
    total : int
        Units of work in the phase.
    unit : str
        Their name, e.g. "epochs".
    log : Callable[[str], None]
        Where lines go (default: the ``fedlatent`` logger at INFO).
    every : float
        Minimum seconds between two lines (the last unit is always shown).
    after : float
        No line before this many seconds have passed: a phase shorter than that stays silent.
    """

    def __init__(
        self,
        desc: str,
        total: int,
        *,
        unit: str = "epochs",
        log: Callable[[str], None] | None = None,
        every: float = 5.0,
        after: float = 0.0,
    ) -> None:
        self.desc, self.total, self.unit, self.every, self.after = desc, total, unit, every, after
        self.log = log or logging.getLogger("fedlatent").info
        self.start = time.monotonic()
        self.last = float("-inf")
        self.lines = 0

    def __call__(self, done: int, **values: float) -> None:
        """Report that ``done`` units are finished, with optional named values (e.g. ``loss``)."""
        now = time.monotonic()
        if now - self.start < self.after or (done < self.total and now - self.last < self.every):
            return
        self.last = now
        elapsed = now - self.start
        eta = elapsed / done * (self.total - done) if done else 0.0
        extra = "".join(f"  {k} {v:.4f}" for k, v in values.items())
        self.log(
            f"{self.desc} {bar(done, self.total)}  {done}/{self.total} {self.unit}  "
            f"{clock(elapsed)} < {clock(eta)}{extra}"
        )
        self.lines += 1


def show_log(name: str = "fedlatent") -> None:
    """Send the ``name`` logger's INFO lines to stderr as ``fedlatent: ...``, without touching the root logger."""
    log = logging.getLogger(name)
    if not log.handlers:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("fedlatent: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing to whatever ``sys.stderr`` is now (tests and tools swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass
