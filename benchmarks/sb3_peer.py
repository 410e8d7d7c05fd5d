"""stable-baselines3 as its users run it: the peer the throughput benchmarks compare with.

This module never imports atari_rl, whose import tunes the process (glibc's heap
thresholds, `atari_rl.heap`; GNU OpenMP's spin count). Run as a script it measures SB3 in
a process of its own with the libraries' defaults ("as shipped"); the benchmarks also
call it in their own process, where SB3 gets atari-rl's settings too. Both are reported.

    python benchmarks/sb3_peer.py ppo '{"num_envs": 8, "n_steps": 128, ...}' --steps 10240

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any


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


def sb3_ppo_steps_per_s(settings: dict[str, Any], steps: int, threads: int) -> float:
    """SB3's PPO with the settings of a `PPOConfig` (the fields below), on the CPU."""
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(threads)
    num_envs, n_steps = settings["num_envs"], settings["n_steps"]
    model = PPO("CnnPolicy", sb3_breakout(num_envs), n_steps=n_steps,
                n_epochs=settings["epochs"],
                batch_size=num_envs * n_steps // settings["minibatches"],
                learning_rate=settings["learning_rate"], clip_range=settings["clip_range"],
                ent_coef=settings["entropy_coef"], vf_coef=settings["value_coef"],
                device="cpu", seed=0, verbose=0)
    return sb3_steps_per_s(model, num_envs * n_steps * 2, steps)


def sb3_dqn_steps_per_s(settings: dict[str, Any], steps: int, threads: int) -> float:
    """SB3's DQN on 1 env with the settings below, epsilon held constant; timed after
    learning starts and `warmup_steps` more."""
    import torch
    from stable_baselines3 import DQN

    torch.set_num_threads(threads)
    model = DQN("CnnPolicy", sb3_breakout(1), buffer_size=settings["buffer_size"],
                batch_size=settings["batch_size"], train_freq=settings["train_freq"],
                learning_starts=settings["learning_starts"],
                target_update_interval=settings["target_update"],
                exploration_initial_eps=settings["epsilon"],
                exploration_final_eps=settings["epsilon"], device="cpu", seed=0, verbose=0)
    return sb3_steps_per_s(model, settings["learning_starts"] + settings["warmup_steps"], steps)


def sb3_a2c_steps_per_s(settings: dict[str, Any], steps: int, threads: int) -> float:
    """SB3's A2C with its own defaults but `num_envs` and `n_steps`."""
    import torch
    from stable_baselines3 import A2C

    torch.set_num_threads(threads)
    num_envs, n_steps = settings["num_envs"], settings["n_steps"]
    model = A2C("CnnPolicy", sb3_breakout(num_envs), n_steps=n_steps, device="cpu", seed=0,
                verbose=0)
    return sb3_steps_per_s(model, num_envs * n_steps * 50, steps)


PEERS = {"a2c": sb3_a2c_steps_per_s, "ppo": sb3_ppo_steps_per_s, "dqn": sb3_dqn_steps_per_s}


def as_shipped(algo: str, settings: dict[str, Any], steps: int, threads: int) -> float:
    """The peer's agent steps/s in a fresh process that never imports atari_rl: glibc's
    and GNU OpenMP's defaults, as a user of SB3 runs it (the GOMP_SPINCOUNT that importing
    atari_rl put in the caller's environment is left out)."""
    env = {name: value for name, value in os.environ.items() if name != "GOMP_SPINCOUNT"}
    child = subprocess.run([sys.executable, __file__, algo, json.dumps(settings),
                            "--steps", str(steps), "--threads", str(threads)],
                           env=env, stdout=subprocess.PIPE, text=True)  # its errors show
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        raise RuntimeError(f"SB3's {algo} in its own process failed (exit {child.returncode});"
                           " its error is printed above")
    return float(json.loads(lines[-1])["steps_per_s"])


def both_ways(algo: str, settings: dict[str, Any], steps: int, threads: int
              ) -> tuple[float, float]:
    """SB3's agent steps/s as shipped (its own process), then in this process, where
    importing atari_rl tuned glibc's heap and GNU OpenMP for it too; each printed."""
    label = f"stable-baselines3 {algo.upper()}"
    shipped = as_shipped(algo, settings, steps, threads)
    print(f"{label:35s} {shipped:8,.0f} agent steps/s (its own process, as shipped)",
          flush=True)
    tuned = PEERS[algo](settings, steps, threads)
    print(f"{label:35s} {tuned:8,.0f} agent steps/s (this process: atari-rl's heap and "
          "OpenMP settings)", flush=True)
    return shipped, tuned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("algo", choices=sorted(PEERS))
    parser.add_argument("settings", type=json.loads, help="the config's fields, as JSON")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    rate = PEERS[args.algo](args.settings, args.steps, args.threads)
    print(json.dumps({"benchmark": "sb3_peer", "algo": args.algo, "steps_per_s": rate}))


if __name__ == "__main__":
    main()
