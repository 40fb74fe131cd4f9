"""Run directories that cannot be mistaken for one another.

What: ``check_out_dir`` refuses an ``out-dir`` that is a symbolic link, or that already holds
files (another run's ``results.json``, ``server_view/`` or ``private_index/`` would be read by
the attacks as this run's) unless ``overwrite`` is set; ``run_directory`` then empties it —
unlinking symbolic links inside without following them — and creates it. A run that fails
leaves ``FAILED`` (``mark_failed``) with the reason instead of results, and ``results.json`` is
only ever written whole (``write_json_atomic``), so "results.json exists" means "the run
finished".

Why here and in the CLI: the CLI calls ``check_out_dir`` before any SuperLink starts (a clear
line, exit code 2); the ServerApp calls ``run_directory`` again because ``flwr run`` users reach
it without the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from fedlatent.config import ConfigError, RunConfig

CHECKPOINT = "checkpoint"  # the folder of a run's checkpoint (``federation.checkpoint``)
CLIENT_STATE = "client_state"  # what the clients the CLI starts keep on "their own disks" (``client_store``)


def _requested(cfg: RunConfig) -> Path:
    if cfg.out_dir:
        return Path(cfg.out_dir).expanduser()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / (f"{stamp}-{cfg.dataset}-{cfg.mode}" + (f"-{cfg.encoder}" if cfg.is_latent else ""))


def check_out_dir(path: str | Path, *, overwrite: bool) -> Path:
    """The absolute run directory ``path`` names, if a run may write there (see module docstring).

    Raises
    ------
    ConfigError
        ``path`` is a symbolic link, not a directory, or a non-empty directory without ``overwrite``.
    """
    path = Path(path).expanduser()
    if path.is_symlink():
        raise ConfigError(f"config key 'out-dir' = {str(path)!r}: is a symbolic link; give the real directory")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"config key 'out-dir' = {str(path)!r}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        held = ", ".join(sorted(p.name for p in path.iterdir())[:4])
        again = " or continue its run (fedlatent run --resume DIR)," if (path / CHECKPOINT).is_dir() else ""
        raise ConfigError(
            f"config key 'out-dir' = {str(path)!r} already holds files ({held}, ...): runs must not mix; "
            f"choose a fresh directory,{again} or set 'overwrite' (--overwrite true) to empty it first"
        )
    return path.resolve()


def run_directory(cfg: RunConfig) -> Path:
    """The run's output directory, checked, emptied when ``overwrite`` says so, and created."""
    out = check_out_dir(_requested(cfg), overwrite=cfg.overwrite)
    if out.is_dir():
        for child in out.iterdir():
            if child.is_symlink() or not child.is_dir():
                child.unlink()  # a link is removed, never followed
            else:
                shutil.rmtree(child)
    out.mkdir(parents=True, exist_ok=True)
    return out


def resumable(out_dir: str) -> Path:
    """The absolute run directory ``out_dir`` that a resume (``resume = true``) would continue, if it can.

    Raises
    ------
    ConfigError
        No ``out-dir``, a symbolic link, a directory without a checkpoint, or a finished run.
    """
    if not out_dir:
        raise ConfigError("config key 'resume' needs 'out-dir': the directory of the run to continue")
    out = Path(out_dir).expanduser()
    if out.is_symlink():
        raise ConfigError(f"config key 'out-dir' = {str(out)!r}: is a symbolic link; give the real directory")
    if not (out / CHECKPOINT / "state.json").is_file():
        raise ConfigError(f"{out} holds no checkpoint ({CHECKPOINT}/state.json): nothing to resume")
    if (out / "results.json").exists():
        raise ConfigError(f"{out} holds a finished run (results.json): nothing to resume")
    return out.resolve()


def resume_directory(cfg: RunConfig) -> Path:
    """The run directory a resume continues (``resumable``), its ``FAILED`` marker removed."""
    out = resumable(cfg.out_dir)
    (out / "FAILED").unlink(missing_ok=True)
    return out


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as strict JSON at ``path``, through a temporary file and a rename (never half-written)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def mark_failed(out: Path, err: BaseException) -> None:
    """Leave ``FAILED`` with the reason (and no ``results.json``) in a run directory that did not finish."""
    (out / "results.json").unlink(missing_ok=True)
    (out / "FAILED").write_text(f"{type(err).__name__}: {err}\n")
