"""Where Double DQN's training loop spends its time, part by part, after warm-up.

`benchmarks/dqn_breakout.py` gives the loop's speed against stable-baselines3 and
`benchmarks/dqn_update.py` the learner alone; this one splits a real `training.train` run
into what it calls, by timing (wall clock) each of these methods while the run goes:
- `AtariPipeline.step`: the emulators and the pipeline around them;
- `DQNAgent.act`: epsilon-greedy actions, the network's forward on num_envs stacks;
- `ReplayMemory.observe`: compressing and storing the new frames;
- `ReplayMemory.sample`: drawing a batch and decompressing its stacks;
- `DQNAgent._settle`: with prefetch, the wait for the thread gathering the next batch
  before the memory changes (what the update, acting and the emulators did not hide);
- `DQNAgent._update`: the loss's forwards and backward, clipping, Adam. On a GPU it only
  queues the last update of an env step; the wait for it falls outside the parts, when
  the env step's statistics are copied to the host once (`dqn._stats`).
Timing starts --warmup agent steps after learning starts (past torch.compile's warm-up).
It also gives the learner's arithmetic rate: the network's FLOPs per sample (the online
network's forward and backward on s, its forward on s', the target's on s') over the time of
the updates; beside it, measured in the same run, what these cores compute at best, a large
bf16 matrix product (fp32 where the CPU has no bf16); and the agent steps/s the loop would
make if its learner computed at that rate, every other part unchanged: the most that a
faster learner can give on these cores.

    python benchmarks/dqn_loop.py --set batch_size=256 --set train_freq=32 \\
        --set compile_step=true                     # ~3 minutes on 2 quiet cores
    python benchmarks/dqn_loop.py --learning-starts 800 --warmup 200 --steps 400 \\
        --set compile=false                         # smoke run

The last line of output is one JSON object.
"""

from __future__ import annotations

import atari_rl  # noqa: F401  # isort: skip  (first: its GOMP_SPINCOUNT must come before torch)

import argparse
import json
from typing import Any

from common import forward_flops, learner_ceiling, profile_loop
from dqn_breakout import parse_set

from atari_rl.dqn import DQNAgent, DQNConfig
from atari_rl.envs import AtariPipeline
from atari_rl.networks import QNetwork
from atari_rl.replay import ReplayMemory

PARTS = {
    "env_step": (AtariPipeline, "step"),
    "act": (DQNAgent, "act"),
    "memory_observe": (ReplayMemory, "observe"),
    "sample": (ReplayMemory, "sample"),
    "prefetch_wait": (DQNAgent, "_settle"),
    "update": (DQNAgent, "_update"),
}
def profile(config: DQNConfig, timed_from: int) -> dict[str, Any]:
    """Seconds per vector step in each part, between agent step `timed_from` and the end,
    and the learner's arithmetic against the machine's matrix product (`learner_ceiling`)."""
    measured = profile_loop(config, DQNAgent, PARTS, timed_from)
    wall, seconds = measured.wall_s, measured.seconds
    vector_steps = measured.agent_steps / config.num_envs
    updates = max(measured.calls["update"], 1)
    # Per sample: the online network's forward and backward on s, its forward on s' (Double
    # DQN's choice of action) and the target's forward on s'.
    total, first = forward_flops(QNetwork(4, dueling=config.dueling))
    flops = updates * config.batch_size * (3 * total - first + 2 * total)
    return {
        "agent_steps_per_s": round(measured.agent_steps_per_s, 1),
        "ms_per_vector_step": round(1000 * wall / vector_steps, 3),
        "ms_per_vector_step_by_part": {name: round(1000 * seconds[name] / vector_steps, 3)
                                       for name in PARTS},
        "share_by_part": {name: round(seconds[name] / wall, 3) for name in PARTS},
        "ms_per_update": round(1000 * seconds["update"] / updates, 2),
        **learner_ceiling(measured, "update", flops, config),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch and emulator threads")
    parser.add_argument("--learning-starts", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=15_000,
                        help="agent steps after learning starts before timing starts")
    parser.add_argument("--steps", type=int, default=35_000, help="timed agent steps")
    parser.add_argument("--set", type=parse_set, action="append", default=[], metavar="NAME=JSON",
                        help="a DQNConfig field changed from dqn-fast, e.g. batch_size=256")
    args = parser.parse_args()
    changes = dict(args.set)
    config = DQNConfig(**{"epsilon_start": 0.01, "epsilon_end": 0.01, **changes})
    config.learning_starts = args.learning_starts
    config.steps = args.learning_starts + args.warmup + args.steps
    config.log_every = max(args.steps // 4, config.num_envs)
    config.checkpoint_every = 10**9
    config.torch_threads = config.env_threads = args.threads
    result = profile(config, args.learning_starts + args.warmup)
    for name, ms in result["ms_per_vector_step_by_part"].items():
        print(f"{name:15s} {ms:7.3f} ms per vector step ({result['share_by_part'][name]:.0%})")
    print(f"{result['agent_steps_per_s']:,.0f} agent steps/s; the learner computes "
          f"{result['learner_gflop_per_s']} GFLOP/s, a large matrix product "
          f"{result['machine_matmul_gflop_per_s']}; with the learner at that rate the loop "
          f"would make {result['agent_steps_per_s_learner_at_matmul_rate']:,.0f} agent steps/s")
    print(json.dumps({"benchmark": "dqn_loop", "threads": args.threads, "changes": changes,
                      **result}))


if __name__ == "__main__":
    main()
