"""What the benchmark scripts share: SB3's Atari pipeline, timing a learner, and a learning
run scored by `atari-rl evaluate`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from atari_rl.run_files import CHECKPOINT_DIR, EVALUATION_FILE, FINAL_POLICY, METRICS_FILE


def sb3_breakout(num_envs: int, seed: int = 0) -> Any:
    """stable-baselines3's own Atari pipeline: make_atari_env + VecFrameStack(4)."""
    import ale_py
    import gymnasium
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gymnasium.register_envs(ale_py)
    return VecFrameStack(make_atari_env("BreakoutNoFrameskip-v4", n_envs=num_envs, seed=seed), 4)


def sb3_steps_per_s(model: Any, warmup_steps: int, steps: int) -> float:
    """Agent steps per second of model.learn, after a warm-up."""
    model.learn(total_timesteps=warmup_steps)
    start = time.perf_counter()
    model.learn(total_timesteps=steps, reset_num_timesteps=False)
    rate = steps / (time.perf_counter() - start)
    model.get_env().close()
    return rate


def learn_and_evaluate(preset: str, steps: int, games: int, options: tuple[str, ...] = (),
                       time_limit_s: float | None = None,
                       run_dir: Path | None = None) -> dict[str, Any]:
    """Train a preset for `steps` agent steps, then score `games` whole evaluation games.

    With `time_limit_s`, training gets SIGTERM when the time is up: the run writes a
    checkpoint and stops, and that checkpoint is what is scored (for a lent machine's short
    budget). `options` are more `atari-rl train` options.
    """
    run_dir = run_dir or Path("runs") / f"bench-{preset}-breakout-{time.strftime('%Y%m%d-%H%M%S')}"
    start = time.perf_counter()
    training = subprocess.Popen([sys.executable, "-m", "atari_rl.cli", "train", "--preset", preset,
                                 "--steps", str(steps), "--run-dir", str(run_dir), *options])
    try:
        training.wait(timeout=time_limit_s)
    except subprocess.TimeoutExpired:
        training.send_signal(signal.SIGTERM)  # the run checkpoints, then exits
        training.wait()
    hours = (time.perf_counter() - start) / 3600
    checkpoints = sorted((run_dir / CHECKPOINT_DIR).glob("step-*"))
    done = run_dir / FINAL_POLICY
    target = run_dir if done.is_file() else checkpoints[-1]
    reached = int(checkpoints[-1].name.split("-")[1]) if checkpoints else steps
    out = run_dir / EVALUATION_FILE
    subprocess.run([sys.executable, "-m", "atari_rl.cli", "evaluate", str(target),
                    "--protocols", "epsilon", "--games", str(games), "--out", str(out)], check=True)
    result = json.loads(out.read_text())
    return {"learning_steps": reached, "train_hours": round(hours, 3), "run_dir": str(run_dir),
            "eval_games": games, "eval_mean": result["mean"], "eval_std": result["std"],
            "eval_median": result["median"]}


def ours_steps_per_s(config: Any, timed_from: int) -> float:
    """Median agent steps/s of a real training run (atari_rl.training.train), read from the
    metrics.csv rows that start at or after `timed_from` (past warm-up and compilation);
    the last row is partial and left out."""
    import csv
    import statistics
    import tempfile

    from atari_rl.envs import AtariPipeline
    from atari_rl.training import train

    config.validate()
    with tempfile.TemporaryDirectory() as run_dir:
        env = AtariPipeline(config.env_config())
        try:
            train(config, Path(run_dir), env)
        finally:
            env.close()
        with open(Path(run_dir) / METRICS_FILE) as handle:
            rows = [(int(row["step"]), float(row["steps_per_s"]))
                    for row in csv.DictReader(handle)]
    rates = [rate for (previous, _), (_, rate) in zip(rows, rows[1:], strict=False)
             if previous >= timed_from]
    return statistics.median(rates[:-1] if len(rates) > 2 else rates)
