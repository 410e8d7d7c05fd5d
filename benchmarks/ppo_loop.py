"""Where PPO's training loop spends its time, part by part, and the emulators' own ceiling.

`benchmarks/ppo_breakout.py` gives the loop's speed against stable-baselines3; this one
splits a real `training.train` run into what it calls, timing (wall clock) each of these
methods while the run goes:
- `AtariPipeline.step`: the emulators and the pipeline around them;
- `PPOAgent.act`: the policy's forward on num_envs stacks, and the draw;
- `Rollout.add`: storing the step;
- `PPOAgent.update`: GAE, then epochs x minibatches of forward, backward and Adam.
Timing starts after --warmup agent steps. It also gives the learner's arithmetic rate (the
network's FLOPs per sample, forward and backward, times the samples of every epoch, over the
time of the updates), a large matrix product's rate on the same device in the same run, and
the agent steps/s the loop would make if its learner computed at that rate, every other
part unchanged: the most that a faster learner can give here. Beside it, in the same
process and with the same envs and threads, the pipeline alone with random actions: what
the loop could reach if acting and learning cost nothing. On a GPU machine with many cores
this says whether the GPU or the emulators bound the run.

    python benchmarks/ppo_loop.py                                  # 2 cores, ~3 minutes
    python benchmarks/ppo_loop.py --compare-yield   # also without envs.YIELD_BEFORE_STEP
    python benchmarks/ppo_loop.py --set num_envs=64 --set minibatches=16 \\
        --set env_threads=14 --set torch_threads=2 --set compile=false   # a GPU machine

The last line of output is one JSON object.
"""

from __future__ import annotations

import atari_rl  # noqa: F401  # isort: skip  (first: its GOMP_SPINCOUNT must come before torch)

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import torch
from common import forward_flops, learner_ceiling, profile_loop
from dqn_breakout import parse_set

from atari_rl import envs
from atari_rl.envs import AtariPipeline
from atari_rl.networks import ActorCritic
from atari_rl.ppo import PPOAgent, PPOConfig
from atari_rl.rollout import Rollout

PARTS = {
    "env_step": (AtariPipeline, "step"),
    "act": (PPOAgent, "act"),
    "rollout_add": (Rollout, "add"),
    "update": (PPOAgent, "update"),
}


def pipeline_steps_per_s(config: PPOConfig, steps: int) -> float:
    """Agent steps/s of the env pipeline alone, random actions, after a short warm-up."""
    env = AtariPipeline(config.env_config())
    rng = np.random.default_rng(0)
    try:
        env.reset()
        for _ in range(20):
            env.step(rng.integers(env.num_actions, size=env.num_envs))
        vector_steps = max(steps // env.num_envs, 1)
        actions = rng.integers(env.num_actions, size=(vector_steps, env.num_envs))
        start = time.perf_counter()
        for row in actions:
            env.step(row)
        return vector_steps * env.num_envs / (time.perf_counter() - start)
    finally:
        env.close()


def profile(config: PPOConfig, timed_from: int) -> dict[str, Any]:
    """Milliseconds per 1,024 agent steps in each part, from agent step `timed_from` on."""
    measured = profile_loop(config, PPOAgent, PARTS, timed_from)
    per_1024 = 1024 / measured.agent_steps
    total, first = forward_flops(ActorCritic(4))
    samples = measured.calls["update"] * config.epochs * config.num_envs * config.n_steps
    flops = samples * (3 * total - first)
    return {
        "agent_steps_per_s": round(measured.agent_steps_per_s, 1),
        "ms_per_1024_steps": round(1000 * measured.wall_s * per_1024, 1),
        "ms_per_1024_steps_by_part": {name: round(1000 * s * per_1024, 1)
                                      for name, s in measured.seconds.items()},
        "share_by_part": {name: round(s / measured.wall_s, 3)
                          for name, s in measured.seconds.items()},
        "ms_per_act": round(1000 * measured.seconds["act"] / max(measured.calls["act"], 1), 2),
        "ms_per_update": round(
            1000 * measured.seconds["update"] / max(measured.calls["update"], 1), 1),
        **learner_ceiling(measured, "update", flops, config),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    threads = os.cpu_count() or 1
    parser.add_argument("--warmup", type=int, default=20_480,
                        help="agent steps not timed (torch.compile's warm-up)")
    parser.add_argument("--steps", type=int, default=81_920, help="timed agent steps")
    parser.add_argument("--env-steps", type=int, default=40_000,
                        help="agent steps of the pipeline alone")
    parser.add_argument("--set", type=parse_set, action="append", default=[], metavar="NAME=JSON",
                        help="a PPOConfig field changed from the ppo preset, e.g. num_envs=64")
    parser.add_argument("--compare-yield", action="store_true",
                        help="first time the loop without the main thread's yield before "
                             "each env step (envs.YIELD_BEFORE_STEP), then with it")
    args = parser.parse_args()
    changes = {"torch_threads": threads, "env_threads": threads, **dict(args.set)}
    config = PPOConfig(**changes)
    config.steps = args.warmup + args.steps
    config.log_every = max(args.steps // 4, config.num_envs)
    config.checkpoint_every = 10**9
    config.validate()
    without_yield = None
    if args.compare_yield:
        envs.YIELD_BEFORE_STEP = False
        without_yield = profile(config, args.warmup)
        envs.YIELD_BEFORE_STEP = True
    result = profile(config, args.warmup)
    result["pipeline_alone_steps_per_s"] = round(pipeline_steps_per_s(config, args.env_steps), 1)
    for name, ms in result["ms_per_1024_steps_by_part"].items():
        share = result["share_by_part"][name]
        print(f"{name:12s} {ms:8.1f} ms per 1,024 agent steps ({share:.0%})")
    print(f"{result['agent_steps_per_s']:,.0f} agent steps/s; the pipeline alone "
          f"{result['pipeline_alone_steps_per_s']:,.0f}; the learner computes "
          f"{result['learner_gflop_per_s']} GFLOP/s, a large matrix product "
          f"{result['machine_matmul_gflop_per_s']}; with the learner at that rate the loop "
          f"would make {result['agent_steps_per_s_learner_at_matmul_rate']:,.0f} agent steps/s")
    if without_yield is not None:
        result["without_yield"] = without_yield
        result["with_yield_vs_without"] = round(
            result["agent_steps_per_s"] / without_yield["agent_steps_per_s"], 3)
        print(f"without the yield: {without_yield['agent_steps_per_s']:,.0f} agent steps/s, "
              f"emulators {without_yield['ms_per_1024_steps_by_part']['env_step']} ms per "
              f"1,024 agent steps; with it {result['with_yield_vs_without']}x")
    print(json.dumps({"benchmark": "ppo_loop", "device": "cuda" if torch.cuda.is_available()
                      else "cpu", "cores": threads, "changes": changes, **result}))


if __name__ == "__main__":
    main()
