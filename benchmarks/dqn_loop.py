"""Where Double DQN's training loop spends its time, part by part, after warm-up.

`benchmarks/dqn_breakout.py` gives the loop's speed against stable-baselines3 and
`benchmarks/dqn_update.py` the learner alone; this one splits a real `training.train` run
into what it calls, by timing (wall clock) each of these methods while the run goes:
- `AtariPipeline.step`: the emulators and the pipeline around them;
- `DQNAgent.act`: epsilon-greedy actions, the network's forward on num_envs stacks;
- `ReplayMemory.observe`: compressing and storing the new frames;
- `ReplayMemory.sample`: drawing a batch and decompressing its stacks;
- `DQNAgent.update`: the loss's forwards and backward, clipping, Adam.
Timing starts --warmup agent steps after learning starts (past torch.compile's warm-up).
It also gives the learner's arithmetic rate: the network's multiply-adds per sample times
the forwards an update does (the online network on s and s', the target on s', and a
backward of about two forwards), over the time of an update; and beside it, measured in
the same run, what these cores compute at best: a large bf16 matrix product (fp32 where
the CPU has no bf16), the ceiling of any learner here.

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
import time
from typing import Any

import torch
from common import profile_loop
from dqn_breakout import parse_set

from atari_rl.dqn import DQNAgent, DQNConfig
from atari_rl.envs import AtariPipeline
from atari_rl.networks import QNetwork, bf16_pays_off
from atari_rl.replay import ReplayMemory

PARTS = {
    "env_step": (AtariPipeline, "step"),
    "act": (DQNAgent, "act"),
    "memory_observe": (ReplayMemory, "observe"),
    "sample": (ReplayMemory, "sample"),
    "update": (DQNAgent, "update"),
}
FORWARDS_PER_UPDATE = 5  # online on s and s', target on s', and a backward of about two


def multiply_adds(num_actions: int = 4) -> int:
    """Multiply-adds of one forward of the Q-network on one 4x84x84 stack."""
    counts: list[int] = []

    def count(module: torch.nn.Module, _: Any, output: torch.Tensor) -> None:
        weight = module.weight
        positions = output[0, 0].numel() if isinstance(module, torch.nn.Conv2d) else 1
        counts.append(weight.numel() * positions)

    network = QNetwork(num_actions)
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
            module.register_forward_hook(count)
    with torch.no_grad():
        network(torch.zeros(1, 4, 84, 84, dtype=torch.uint8))
    return sum(counts)


def matmul_gflop_per_s(bf16: bool, size: int = 2048, repeats: int = 20) -> float:
    """GFLOP/s of a size x size matrix product: about the most these cores compute."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def profile(config: DQNConfig, timed_from: int) -> dict[str, Any]:
    """Seconds per vector step in each part, between agent step `timed_from` and the end."""
    measured = profile_loop(config, DQNAgent, PARTS, timed_from)
    wall, seconds = measured.wall_s, measured.seconds
    vector_steps = measured.agent_steps / config.num_envs
    update_s = seconds["update"] / max(measured.calls["update"], 1)
    flops = 2 * multiply_adds() * FORWARDS_PER_UPDATE * config.batch_size
    return {
        "agent_steps_per_s": round(measured.agent_steps_per_s, 1),
        "ms_per_vector_step": round(1000 * wall / vector_steps, 3),
        "ms_per_vector_step_by_part": {name: round(1000 * seconds[name] / vector_steps, 3)
                                       for name in PARTS},
        "share_by_part": {name: round(seconds[name] / wall, 3) for name in PARTS},
        "ms_per_update": round(1000 * update_s, 2),
        "learner_gflop_per_s": round(flops / update_s / 1e9, 1),
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
    result["machine_matmul_gflop_per_s"] = round(
        matmul_gflop_per_s(config.bf16 and bf16_pays_off(torch.device("cpu"))), 1)
    for name, ms in result["ms_per_vector_step_by_part"].items():
        print(f"{name:15s} {ms:7.3f} ms per vector step ({result['share_by_part'][name]:.0%})")
    print(f"{result['agent_steps_per_s']:,.0f} agent steps/s; the learner computes "
          f"{result['learner_gflop_per_s']} GFLOP/s, a large matrix product "
          f"{result['machine_matmul_gflop_per_s']}")
    print(json.dumps({"benchmark": "dqn_loop", "threads": args.threads, "changes": changes,
                      **result}))


if __name__ == "__main__":
    main()
