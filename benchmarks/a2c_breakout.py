"""A2C on Breakout: throughput against stable-baselines3, and what 2 M steps learn.

Throughput: our A2C and SB3's A2C side by side in one run, same game, same number of envs,
same n_steps, same Nature CNN, both on the CPU. Ours is read from the steps/s column of the
run's metrics.csv after its warm-up rows (torch.compile spends its first ~40 s compiling).

Learning (--learning): the `a2c` preset for --learning-steps agent steps, then the mean raw
score of 30 whole evaluation games (`atari-rl evaluate`, all lives, no-op starts).

    python benchmarks/a2c_breakout.py                  # throughput, ~3 minutes
    python benchmarks/a2c_breakout.py --learning       # + 2 M steps and 30 games (~30 min)

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from atari_rl.config import A2CConfig
from atari_rl.envs import AtariPipeline
from atari_rl.training import train

THREADS = 2


def ours_steps_per_s(num_envs: int, n_steps: int, steps: int, warmup_rows: int) -> float:
    config = A2CConfig(num_envs=num_envs, n_steps=n_steps, steps=steps, log_every=steps // 20,
                       torch_threads=THREADS, env_threads=THREADS)
    config.validate()
    with tempfile.TemporaryDirectory() as run_dir:
        env = AtariPipeline(config.env_config())
        try:
            train(config, Path(run_dir), env)
        finally:
            env.close()
        with open(Path(run_dir) / "metrics.csv") as handle:
            rates = [float(row["steps_per_s"]) for row in csv.DictReader(handle)]
    return statistics.median(rates[warmup_rows:-1])


def sb3_steps_per_s(num_envs: int, n_steps: int, steps: int) -> float:
    import ale_py
    import gymnasium
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gymnasium.register_envs(ale_py)
    torch.set_num_threads(THREADS)
    env = VecFrameStack(make_atari_env("BreakoutNoFrameskip-v4", n_envs=num_envs, seed=0), 4)
    model = A2C("CnnPolicy", env, n_steps=n_steps, device="cpu", seed=0, verbose=0)
    model.learn(total_timesteps=num_envs * n_steps * 50)  # warm-up
    start = time.perf_counter()
    model.learn(total_timesteps=steps, reset_num_timesteps=False)
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def learning(steps: int, games: int) -> dict[str, float]:
    run_dir = Path("runs") / f"bench-a2c-breakout-{time.strftime('%Y%m%d-%H%M%S')}"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "atari_rl.cli", "train", "--preset", "a2c",
                    "--steps", str(steps), "--run-dir", str(run_dir)], check=True)
    hours = (time.perf_counter() - start) / 3600
    subprocess.run([sys.executable, "-m", "atari_rl.cli", "evaluate", str(run_dir),
                    "--games", str(games)], check=True)
    result = json.loads((run_dir / "evaluation.json").read_text())
    return {"learning_steps": steps, "train_hours": round(hours, 3), "run_dir": str(run_dir),
            "eval_games": games, "eval_mean": result["mean"], "eval_std": result["std"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--n-steps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=160_000, help="ours, timed after warm-up")
    parser.add_argument("--sb3-steps", type=int, default=30_000)
    parser.add_argument("--learning", action="store_true")
    parser.add_argument("--learning-steps", type=int, default=2_000_000)
    parser.add_argument("--games", type=int, default=30)
    args = parser.parse_args()

    ours = ours_steps_per_s(args.num_envs, args.n_steps, args.steps, warmup_rows=4)
    print(f"atari-rl A2C          {ours:8,.0f} agent steps/s", flush=True)
    sb3 = sb3_steps_per_s(args.num_envs, args.n_steps, args.sb3_steps)
    print(f"stable-baselines3 A2C {sb3:8,.0f} agent steps/s", flush=True)
    result = {"benchmark": "a2c_breakout", "num_envs": args.num_envs, "n_steps": args.n_steps,
              "ours_steps_per_s": round(ours), "sb3_steps_per_s": round(sb3),
              "ours_vs_sb3": round(ours / sb3, 2)}
    if args.learning:
        result.update(learning(args.learning_steps, args.games))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
