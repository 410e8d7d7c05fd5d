"""Shared fixtures."""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from atari_rl.run_files import CONFIG_FILE, FINAL_POLICY, GAMES_FILE, METRICS_FILE, TENSORBOARD_DIR

# --- run directories for the plot, evaluate, record and report commands -------------------

DQN_METRICS = ["step", "td_loss", "q_mean", "target_mean", "grad_norm", "epsilon", "replay_size",
               "steps_per_s", "games", "score_mean100", "score_mean20", "best_score"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real A2C run of 1,000 agent steps made through the CLI, once per session.

    Shared: tests that write into a run work on a copy (`run_copy`). One torch and one
    emulator thread: on a busy 2-core machine the defaults (one per core each) made this
    8 times slower (34 against 280 agent steps/s), the threads fighting over the cores.
    """
    from atari_rl.cli import main

    run_dir = tmp_path_factory.mktemp("tiny") / "a2c-run"
    args = ["train", "--steps", "1000", "--num-envs", "2", "--no-compile", "--log-every", "100",
            "--torch-threads", "1", "--env-threads", "1", "--run-dir", str(run_dir)]
    assert main(args) == 0
    return run_dir


@pytest.fixture(scope="session")
def tiny_dqn_run(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path) -> Path:
    """A run directory shaped like a DQN run: a real dueling QNetwork saved as training saves
    it, and DQN's metrics.csv columns (no updates before learning starts: NaN losses).

    Made by hand because DQN needs thousands of steps of random play before it learns;
    the games are the A2C run's.
    """
    from atari_rl.checkpoints import save_tensors
    from atari_rl.networks import QNetwork

    run_dir = tmp_path_factory.mktemp("tiny") / "dqn-run"
    run_dir.mkdir()
    config = {"algo": "dqn", "game": "breakout", "steps": 1000, "seed": 0, "num_envs": 2,
              "dueling": True, "log_every": 100}
    (run_dir / CONFIG_FILE).write_text(json.dumps(config))
    shutil.copy(tiny_run / GAMES_FILE, run_dir / GAMES_FILE)
    with (run_dir / METRICS_FILE).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(DQN_METRICS)
        for row in range(1, 11):
            learning = row > 3
            loss = 0.05 / row if learning else math.nan
            writer.writerow([row * 100, loss, 0.1 * row if learning else math.nan, 0.1 * row,
                             1.0 if learning else math.nan, 1.0 - 0.09 * row, row * 100, 300.0,
                             row // 3, 1.0, 1.0, 2.0])
    save_tensors(run_dir / FINAL_POLICY, QNetwork(4, dueling=True).state_dict(),
                 {"algo": "dqn", "game": "breakout", "num_actions": "4"})
    return run_dir


@pytest.fixture
def run_copy(tmp_path: Path, tiny_run: Path) -> Callable[..., Path]:
    """copy(source=tiny_run, name="run"): a private copy of a session run to write into."""

    def copy(source: Path = tiny_run, name: str = "run") -> Path:
        return Path(shutil.copytree(source, tmp_path / name,
                                    ignore=shutil.ignore_patterns(TENSORBOARD_DIR)))

    return copy

