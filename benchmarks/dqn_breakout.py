"""Double DQN on Breakout: throughput against stable-baselines3, and what 1 M steps learn.

Throughput, side by side in one run, both on the CPU with --threads torch threads (2):
- SB3's DQN: `CnnPolicy` (the Nature CNN), 1 env through `make_atari_env` + `VecFrameStack`,
  buffer 100 k, batch 32, one update every 4 agent steps;
- ours with exactly those settings (1 env, buffer 100 k, batch 32, every 4 steps, 1-step
  targets), so the ratio compares implementations and nothing else;
- ours with the `dqn-fast` preset (8 envs, batch 64 every 8 agent steps: the same replay
  ratio of 8 samples learned per step played), the settings a run here would use.
SB3 runs twice: in a process of its own, as its users run it (`sb3_steps_per_s`, the
ratios), and in this one, where importing atari_rl has tuned glibc's heap and GNU OpenMP
for it too (`sb3_with_our_settings_steps_per_s`).
Epsilon is held at a constant small value while timing (0.05, the fast preset's 0.01) so
that both sides run the network for nearly every action, as they do for most of a run.
Only steps after learning starts are timed, and ours after torch.compile's warm-up (its
first ~40 s); ours is read from the steps/s column of the run's metrics.csv, which counts
everything the training loop does (logging included). The SB3 figure is timed around
`learn()` after a warm-up call.

Learning (--learning): `atari-rl train --preset dqn-fast` (or --learning-preset) for
--learning-steps agent steps (1 M: hours on this machine), then the mean raw score of 30
whole games under `atari-rl evaluate`'s protocol (all lives, no-op starts, epsilon 0.01),
and the agent steps and seconds at which the training mean first reached 50 ... 300.

    python benchmarks/dqn_breakout.py                  # throughput, ~6 minutes
    python benchmarks/dqn_breakout.py --learning       # + 1 M steps and 30 games (hours)
    python benchmarks/dqn_breakout.py --skip-throughput --learning \
        --learning-preset dqn-sample-efficient --learning-steps 3000000   # steps to 50 ... 300

The last line of output is one JSON object.
"""

from __future__ import annotations

import atari_rl  # noqa: F401  # isort: skip  (first: its GOMP_SPINCOUNT must come before torch)

import argparse
import json
from typing import Any

from common import add_learning_options, learning, ours_steps_per_s
from sb3_peer import both_ways

from atari_rl.dqn import DQNConfig

THREADS = 2  # torch threads of both sides (and our emulator threads); --threads changes it
BUFFER = 100_000  # the SB3 comparison's settings
BATCH = 32
TRAIN_FREQ = 4
TARGET_UPDATE = 10_000
EPSILON = 0.05


def same_settings_config(learning_starts: int, steps: int, threads: int) -> DQNConfig:
    return DQNConfig(
        num_envs=1, buffer_size=BUFFER, batch_size=BATCH, train_freq=TRAIN_FREQ,
        target_update=TARGET_UPDATE, n_steps=1, learning_starts=learning_starts,
        epsilon_start=EPSILON, epsilon_end=EPSILON, steps=learning_starts + steps,
        log_every=max(steps // 12, 1), checkpoint_every=10**9, torch_threads=threads,
        env_threads=threads, seed=0,
    )


def fast_config(steps: int, changes: dict[str, Any], threads: int) -> DQNConfig:
    config = DQNConfig(**changes)  # the dqn-fast preset is the dataclass defaults
    config.epsilon_start = config.epsilon_end
    config.steps = config.learning_starts + steps
    config.log_every = max(steps // 12, config.num_envs)
    config.checkpoint_every = 10**9
    config.torch_threads = config.env_threads = threads
    return config


def parse_set(text: str) -> tuple[str, Any]:
    name, _, value = text.partition("=")
    return name.replace("-", "_"), json.loads(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learning-starts", type=int, default=2_000,
                        help="same-settings runs (ours and SB3)")
    parser.add_argument("--steps", type=int, default=6_000,
                        help="ours, same settings: steps timed after learning starts + warm-up")
    parser.add_argument("--warmup", type=int, default=1_000,
                        help="steps after learning starts not timed (torch.compile warm-up)")
    parser.add_argument("--sb3-steps", type=int, default=4_000)
    parser.add_argument("--fast-steps", type=int, default=48_000,
                        help="ours, dqn-fast: agent steps after its learning starts")
    parser.add_argument("--fast-warmup", type=int, default=8_000)
    parser.add_argument("--set", type=parse_set, action="append", default=[], metavar="NAME=JSON",
                        help="change a dqn-fast setting for the run, e.g. --set batch_size=128")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="torch threads of both sides: 1 when another job holds a core")
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    add_learning_options(parser, "dqn-fast", 1_000_000)
    args = parser.parse_args()

    result: dict[str, Any] = {"benchmark": "dqn_breakout", "threads": args.threads}
    if not args.skip_throughput:
        result.update(throughput(args))
    if args.learning:
        result.update(learning(args), eval_target=15)
    print(json.dumps(result))


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    """Ours with SB3's settings and with dqn-fast, and SB3's DQN, side by side."""
    same = ours_steps_per_s(same_settings_config(args.learning_starts, args.warmup + args.steps,
                                                 args.threads),
                            args.learning_starts + args.warmup)
    print(f"atari-rl Double DQN, SB3's settings {same:8,.0f} agent steps/s", flush=True)
    fast_changes = dict(args.set)
    fast_run = fast_config(args.fast_warmup + args.fast_steps, fast_changes, args.threads)
    fast = ours_steps_per_s(fast_run, fast_run.learning_starts + args.fast_warmup)
    print(f"atari-rl Double DQN, dqn-fast       {fast:8,.0f} agent steps/s", flush=True)
    result: dict[str, Any] = {
        "same_settings": {"num_envs": 1, "buffer_size": BUFFER, "batch_size": BATCH,
                          "train_freq": TRAIN_FREQ, "epsilon": EPSILON},
        "ours_same_settings_steps_per_s": round(same),
        "dqn_fast_changes": fast_changes,
        "ours_dqn_fast_steps_per_s": round(fast),
    }
    if not args.skip_sb3:
        settings = {"buffer_size": BUFFER, "batch_size": BATCH, "train_freq": TRAIN_FREQ,
                    "learning_starts": args.learning_starts, "target_update": TARGET_UPDATE,
                    "epsilon": EPSILON, "warmup_steps": args.warmup}
        sb3, tuned = both_ways("dqn", settings, args.sb3_steps, args.threads)
        result.update(sb3_steps_per_s=round(sb3), ours_same_settings_vs_sb3=round(same / sb3, 2),
                      ours_dqn_fast_vs_sb3=round(fast / sb3, 2), target_vs_sb3=3.0,
                      sb3_with_our_settings_steps_per_s=round(tuned),
                      ours_dqn_fast_vs_sb3_with_our_settings=round(fast / tuned, 2))
    return result


if __name__ == "__main__":
    main()
