"""The sweep runner: fresh directory per point, resume after Ctrl-C, failed points retried."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from sweep_fakes import fake_attacks, fake_run

from fedlatent.bench.runner import is_finished, point_dir, run_sweep
from fedlatent.bench.sweep import SweepSpec, points
from fedlatent.config import RunConfig
from fedlatent.runs import run_config

SPEC = SweepSpec.from_mapping(
    {"sweep": {"attacks": "quick"}, "grid": {"mode": ["raw", "latent-share"], "epsilon": [math.inf, 3.0]}}
)


def sweep(out: Path, run_point=fake_run, spec: SweepSpec = SPEC) -> dict:
    return run_sweep(
        spec, out, run_point=run_point, attack_point=lambda d, s: fake_attacks(d, 0.1), run_config=run_config
    )


def test_every_point_gets_its_own_finished_directory_and_the_shared_cache(tmp_path: Path) -> None:
    seen: list[RunConfig] = []
    done = sweep(tmp_path, run_point=lambda cfg: (seen.append(cfg), fake_run(cfg))[1])
    assert done["finished"] == done["points"] == 5 and done["failed"] == []
    assert len({c.out_dir for c in seen}) == 5
    assert {c.cache_dir for c in seen} == {str(tmp_path / ".cache")}
    for p in points(SPEC):
        assert is_finished(tmp_path, p)
        # The public-only bar is never attacked (it received nothing); every other point is.
        assert (point_dir(tmp_path, p) / "attacks.json").is_file() != p.is_public_only
    assert json.loads((tmp_path / "sweep.json").read_text())["points"][0]["overrides"]["mode"] == "public-only"


def test_an_interrupted_sweep_resumes_without_redoing_a_finished_point(tmp_path: Path) -> None:
    calls: list[str] = []

    def interrupted(cfg: RunConfig) -> dict:
        calls.append(cfg.out_dir)
        if len(calls) == 2:  # Ctrl-C in the middle of the second point, after it wrote files
            (Path(cfg.out_dir)).mkdir(parents=True)
            (Path(cfg.out_dir) / "history.csv").write_text("round,acc")
            raise KeyboardInterrupt
        return fake_run(cfg)

    with pytest.raises(KeyboardInterrupt):
        sweep(tmp_path, run_point=interrupted)
    first, second = calls
    assert (Path(first) / "point.json").is_file() and not (Path(second) / "point.json").is_file()
    stamp = (Path(first) / "point.json").stat().st_mtime_ns

    rerun: list[str] = []
    done = sweep(tmp_path, run_point=lambda cfg: (rerun.append(cfg.out_dir), fake_run(cfg))[1])
    assert done["skipped"] == 1 and first not in rerun and rerun[0] == second and len(rerun) == 4
    assert (Path(first) / "point.json").stat().st_mtime_ns == stamp
    assert json.loads((Path(second) / "results.json").read_text())["mode"]  # redone from scratch, whole
    assert not (Path(second) / "history.csv").exists()


def test_a_failing_point_is_recorded_the_rest_goes_on_and_a_rerun_retries_it(tmp_path: Path) -> None:
    def flaky(cfg: RunConfig) -> dict:
        if cfg.mode == "latent-share" and cfg.dp:
            raise RuntimeError("client crashed")
        return fake_run(cfg)

    done = sweep(tmp_path, run_point=flaky)
    assert done["finished"] == 4 and len(done["failed"]) == 1
    failed = json.loads((tmp_path / "failed.json").read_text())
    assert "client crashed" in next(iter(failed.values()))
    again = sweep(tmp_path)
    assert again["skipped"] == 4 and again["failed"] == [] and json.loads((tmp_path / "failed.json").read_text()) == {}


def test_an_interrupted_point_with_a_checkpoint_is_resumed_not_redone(tmp_path: Path) -> None:
    def killed(cfg: RunConfig) -> dict:
        if cfg.mode == "raw" and not cfg.dp:  # this federation dies after its first checkpoint
            (Path(cfg.out_dir) / "checkpoint").mkdir(parents=True)
            (Path(cfg.out_dir) / "checkpoint" / "state.json").write_text("{}")
            raise KeyboardInterrupt
        return fake_run(cfg)

    with pytest.raises(KeyboardInterrupt):
        sweep(tmp_path, run_point=killed)

    resumed: list[str] = []

    def resume(run_dir: Path, overrides: dict) -> RunConfig:
        resumed.append(str(run_dir))
        return RunConfig.from_run_config({"mode": "raw", "resume": True, "out-dir": str(run_dir)})

    ran: list[RunConfig] = []
    done = run_sweep(SPEC, tmp_path, run_point=lambda cfg: (ran.append(cfg), fake_run(cfg))[1],
                     attack_point=None, run_config=run_config, resume_config=resume)  # fmt: skip
    assert done["failed"] == [] and len(resumed) == 1
    assert [c.resume for c in ran] == [True] + [False] * (len(ran) - 1) and ran[0].out_dir == resumed[0]
    assert (Path(resumed[0]) / "checkpoint" / "state.json").is_file()  # kept, not removed


def test_attacks_run_beside_the_next_federation_and_a_failed_attack_leaves_its_point_unfinished(
    tmp_path: Path,
) -> None:
    import threading
    import time

    federating = threading.Event()
    overlapped: list[bool] = []

    def run_point(cfg: RunConfig) -> dict:
        federating.set()
        time.sleep(0.2)  # a federation: the previous point's attacks run meanwhile
        federating.clear()
        return fake_run(cfg)

    def attack_point(where: Path, spec: SweepSpec) -> dict:
        time.sleep(0.05)
        overlapped.append(federating.is_set())
        if "latent-share" in where.name and "eps3" in where.name:
            raise RuntimeError("inverse net diverged")
        return fake_attacks(where, 0.1)

    done = run_sweep(SPEC, tmp_path, run_point=run_point, attack_point=attack_point, run_config=run_config)
    assert any(overlapped)  # some attacks ran while a federation did
    assert done["finished"] == 4 and len(done["failed"]) == 1
    failed = json.loads((tmp_path / "failed.json").read_text())
    assert "attacks: RuntimeError: inverse net diverged" in next(iter(failed.values()))
    unfinished = [p for p in points(SPEC) if not is_finished(tmp_path, p)]
    assert len(unfinished) == 1 and (point_dir(tmp_path, unfinished[0]) / "results.json").is_file()
    federations: list[str] = []
    again = run_sweep(SPEC, tmp_path, run_point=lambda cfg: (federations.append(cfg.out_dir), fake_run(cfg))[1],
                      attack_point=lambda where, spec: fake_attacks(where, 0.1), run_config=run_config)  # fmt: skip
    assert again["failed"] == [] and federations == []  # its federation stands: only its attacks ran again
    assert is_finished(tmp_path, unfinished[0])
