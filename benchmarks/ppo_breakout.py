"""PPO on Breakout: throughput against stable-baselines3's PPO, and what 3 M steps learn.

Throughput: our PPO and SB3's PPO side by side in one run with the same settings (the
anchors': 8 envs, 128 steps, 4 epochs of minibatch 256, Nature CNN), both on the CPU with
the same threads. Ours is read from the steps/s column of the run's metrics.csv after its
warm-up rows (torch.compile spends its first minute compiling). SB3 runs twice: in a
process of its own as its users run it (`ours_vs_sb3`), and in this one, where importing
atari_rl has tuned glibc's heap and GNU OpenMP for it too (`ours_vs_sb3_with_our_settings`).

Learning (--learning): the `ppo` preset for --learning-steps agent steps, then the mean raw
score of --games whole evaluation games (`atari-rl evaluate`: all lives, no-op starts,
epsilon 0.01). --time-limit S stops the training after S seconds instead (the run writes a
checkpoint on SIGTERM) and scores that checkpoint: for a lent GPU machine's short budget.

    python benchmarks/ppo_breakout.py                   # throughput, ~5 minutes
    python benchmarks/ppo_breakout.py --skip-throughput --learning --time-limit 420 \\
        --train-option=--num-envs=64 --eval-option=--num-envs=50   # on a GPU machine
    bash benchmarks/device_learning.sh     # the same, with the options of the H100 run (README)

The last line of output is one JSON object.
"""

from __future__ import annotations

import atari_rl  # noqa: F401  # isort: skip  (first: its GOMP_SPINCOUNT must come before torch)

import argparse
import dataclasses
import json
import os

import torch
from common import add_learning_options, learning, ours_steps_per_s
from sb3_peer import both_ways

from atari_rl.ppo import PPOConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=102_400, help="ours, timed after warm-up")
    parser.add_argument("--sb3-steps", type=int, default=10_240)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-throughput", action="store_true")
    add_learning_options(parser, "ppo", 3_000_000)
    args = parser.parse_args()

    result: dict[str, object] = {"benchmark": "ppo_breakout",
                                 "device": "cuda" if torch.cuda.is_available() else "cpu"}
    if not args.skip_throughput:
        config = PPOConfig(steps=args.steps, log_every=args.steps // 10, device="cpu",
                           torch_threads=args.threads, env_threads=args.threads)
        ours = ours_steps_per_s(config, timed_from=4 * config.log_every)
        print(f"atari-rl PPO          {ours:8,.0f} agent steps/s", flush=True)
        settings = dataclasses.asdict(config)
        shipped, tuned = both_ways("ppo", settings, args.sb3_steps, args.threads)
        result.update(threads=args.threads, ours_steps_per_s=round(ours),
                      sb3_steps_per_s=round(shipped), ours_vs_sb3=round(ours / shipped, 2),
                      sb3_with_our_settings_steps_per_s=round(tuned),
                      ours_vs_sb3_with_our_settings=round(ours / tuned, 2))
    if args.learning:
        result.update(learning(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
