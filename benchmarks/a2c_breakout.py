"""A2C on Breakout: throughput against stable-baselines3, and what 2 M steps learn.

Throughput: our A2C and SB3's A2C side by side in one run, same game, same number of envs,
same n_steps, same Nature CNN, both on the CPU. Ours is read from the steps/s column of the
run's metrics.csv after its warm-up rows (torch.compile spends its first ~40 s compiling).
SB3 runs twice: in a process of its own, as its users run it (`ours_vs_sb3`), and in this
one, where importing atari_rl has tuned glibc's heap and GNU OpenMP for it too.

Learning (--learning): the `a2c` preset for --learning-steps agent steps, then the mean raw
score of 30 whole evaluation games (`atari-rl evaluate`, all lives, no-op starts).

    python benchmarks/a2c_breakout.py                  # throughput, ~3 minutes
    python benchmarks/a2c_breakout.py --learning       # + 2 M steps and 30 games (~30 min)

The last line of output is one JSON object.
"""

from __future__ import annotations

import atari_rl  # noqa: F401  # isort: skip  (first: its GOMP_SPINCOUNT must come before torch)

import argparse
import json

from common import add_learning_options, learning, ours_steps_per_s
from sb3_peer import both_ways

from atari_rl.a2c import A2CConfig

THREADS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--n-steps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=160_000, help="ours, timed after warm-up")
    parser.add_argument("--sb3-steps", type=int, default=30_000)
    add_learning_options(parser, "a2c", 2_000_000)
    args = parser.parse_args()

    config = A2CConfig(num_envs=args.num_envs, n_steps=args.n_steps, steps=args.steps,
                       log_every=args.steps // 20, torch_threads=THREADS, env_threads=THREADS)
    ours = ours_steps_per_s(config, timed_from=4 * config.log_every)  # compiled by then
    print(f"atari-rl A2C          {ours:8,.0f} agent steps/s", flush=True)
    settings = {"num_envs": args.num_envs, "n_steps": args.n_steps}
    sb3, tuned = both_ways("a2c", settings, args.sb3_steps, THREADS)
    result = {"benchmark": "a2c_breakout", "num_envs": args.num_envs, "n_steps": args.n_steps,
              "ours_steps_per_s": round(ours), "sb3_steps_per_s": round(sb3),
              "ours_vs_sb3": round(ours / sb3, 2),
              "sb3_with_our_settings_steps_per_s": round(tuned),
              "ours_vs_sb3_with_our_settings": round(ours / tuned, 2)}
    if args.learning:
        result.update(learning(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
