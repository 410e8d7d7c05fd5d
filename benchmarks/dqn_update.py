"""Double DQN's learner alone: the time to get a replay batch and to learn from it.

Fills a replay memory with --fill-steps agent steps of random play on Breakout through
`AtariPipeline` (8 envs, stored as `DQNAgent` stores them), then for each variant times
--updates updates after --warmup untimed ones (torch.compile's warm-up). Per update:
- sample: `DQNAgent.next_batch`, drawing and decompressing a batch, or with prefetch
  waiting for the one gathered in the background and starting the next;
- update: `DQNAgent.update`, the loss's forwards and backward, gradient clipping, Adam;
- samples/s: transitions learned per second, batch / (sample + update), and the agent
  steps per second that this learner alone would allow at --replay-ratio samples learned
  per agent step (batch_size / train_freq; 8 in `dqn-fast`).

Variants: `dqn-fast`'s settings at each of --batches: larger batches updated less often at
the same replay ratio learn as many samples per agent step, so the batch with the most
samples/s learns fastest per hour (if it learns as well per sample). Then, at each of
--option-batches, each DQNConfig option alone and both together: `prefetch` and
`compile_step`. (A third, one online forward over s and s' stacked, was 12% slower an
update at batch 64 here and was dropped.) And `prioritized` replay, from a second memory
filled with the same play: its sum tree and priority updates cost time at each update and
at each stored step (the `store` line compares the two memories' time per env step).

What it leaves out: in training, acting and the emulators run between updates, which
gives prefetch more time to hide the sampling, and the threads compete for the cores. The
memory holds --fill-steps transitions, which fit in the CPU's caches where a full 1 M
memory does not, so sampling here is at its fastest.

    python benchmarks/dqn_update.py               # ~5-10 minutes on 2 quiet cores
    python benchmarks/dqn_update.py --fill-steps 800 --updates 3 --warmup 1 \\
        --batches 32 --option-batches 32 --no-compile   # smoke run, ~1 minute

The last line of output is one JSON object.
"""

from __future__ import annotations

import atari_rl  # noqa: F401  # isort: skip  (first: its GOMP_SPINCOUNT must come before torch)

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from atari_rl.dqn import DQNAgent, DQNConfig, replay_memory
from atari_rl.envs import AtariPipeline
from atari_rl.networks import bf16_pays_off
from atari_rl.replay import ReplayMemory

OPTIONS = {
    "baseline": {},
    "prefetch": {"prefetch": True},
    "compile_step": {"compile_step": True},
    "both": {"prefetch": True, "compile_step": True},
    "prioritized": {"prioritized": True},
}


def filled_memory(steps: int, threads: int, seed: int, prioritized: bool = False
                  ) -> tuple[ReplayMemory, int, float]:
    """A `dqn-fast` replay memory after `steps` agent steps of uniformly random actions;
    also the game's number of actions and the mean seconds to store one env step."""
    config = DQNConfig(env_threads=threads, seed=seed, prioritized=prioritized)
    memory = replay_memory(config)
    env = AtariPipeline(config.env_config())
    try:
        rng = np.random.default_rng(seed)
        memory.observe_reset(env.reset(seed=seed))
        storing = 0.0
        for _ in range(steps // config.num_envs):
            step = env.step(rng.integers(0, env.num_actions, config.num_envs))
            start = time.perf_counter()
            memory.observe(step)
            storing += time.perf_counter() - start
        return memory, env.num_actions, storing / (steps // config.num_envs)
    finally:
        env.close()


def time_updates(memories: dict[bool, ReplayMemory], num_actions: int, batch_size: int,
                 options: dict[str, bool], updates: int, warmup: int, seed: int,
                 compile_loss: bool) -> tuple[float, float]:
    """Mean seconds per update spent getting the batch and learning from it."""
    torch.manual_seed(seed)
    config = DQNConfig(batch_size=batch_size, buffer_size=10_000, seed=seed,
                       compile=compile_loss, **options)
    agent = DQNAgent(config, num_actions, torch.device("cpu"))
    # a gather left pending by the variant before ends in the warm-up
    agent.memory = memories[config.prioritized]
    for _ in range(warmup):
        agent.update(agent.next_batch())
    sample = update = 0.0
    for _ in range(updates):
        start = time.perf_counter()
        batch = agent.next_batch()
        sampled = time.perf_counter()
        agent.update(batch)
        sample += sampled - start
        update += time.perf_counter() - sampled
    return sample / updates, update / updates


def integers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch (and emulator) threads")
    parser.add_argument("--updates", type=int, default=300, help="timed updates per variant")
    parser.add_argument("--warmup", type=int, default=10,
                        help="untimed updates first (torch.compile compiles in the first)")
    parser.add_argument("--fill-steps", type=int, default=30_000,
                        help="agent steps of random play stored before timing")
    parser.add_argument("--batches", type=integers, default=[32, 64, 128, 256],
                        help="batch sizes of the baseline, comma-separated")
    parser.add_argument("--option-batches", type=integers, default=[64, 128],
                        help="batch sizes at which each option is timed")
    parser.add_argument("--replay-ratio", type=float, default=8.0,
                        help="samples learned per agent step, for the steps/s column")
    parser.add_argument("--no-compile", action="store_true",
                        help="the loss runs eagerly, not compiled (smoke runs: no warm-up)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    # One graph per batch size and option: more than the default limit of 8, past which
    # torch.compile would quietly run the loss eagerly.
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    start = time.perf_counter()
    memory, num_actions, store = filled_memory(args.fill_steps, args.threads, args.seed)
    print(f"replay memory: {len(memory):,} transitions in {time.perf_counter() - start:.0f} s; "
          f"torch threads {args.threads}, bf16 {bf16_pays_off(torch.device('cpu'))}",
          flush=True)
    memories = {False: memory}
    variants = [("baseline", batch) for batch in args.batches]
    variants += [(name, batch) for batch in args.option_batches for name in OPTIONS
                 if name != "baseline"]
    store_ms = {"uniform": round(store * 1e3, 3)}
    if args.option_batches:
        memories[True], _, store = filled_memory(args.fill_steps, args.threads, args.seed,
                                                 prioritized=True)
        store_ms["prioritized"] = round(store * 1e3, 3)
        print(f"store one env step: uniform {store_ms['uniform']:.3f} ms, prioritized "
              f"{store_ms['prioritized']:.3f} ms", flush=True)
    print(f"{'variant':<16}{'batch':>6}{'sample ms':>11}{'update ms':>11}{'total ms':>10}"
          f"{'samples/s':>11}{'steps/s':>9}", flush=True)
    rows: list[dict[str, Any]] = []
    for name, batch in variants:
        sample, update = time_updates(memories, num_actions, batch, OPTIONS[name],
                                      args.updates, args.warmup, args.seed,
                                      not args.no_compile)
        total = sample + update
        rows.append({"variant": name, "batch_size": batch, "sample_ms": round(sample * 1e3, 2),
                     "update_ms": round(update * 1e3, 2), "total_ms": round(total * 1e3, 2),
                     "samples_per_s": round(batch / total),
                     "agent_steps_per_s": round(batch / total / args.replay_ratio)})
        print(f"{name:<16}{batch:>6}{sample * 1e3:>11.2f}{update * 1e3:>11.2f}"
              f"{total * 1e3:>10.2f}{batch / total:>11,.0f}"
              f"{batch / total / args.replay_ratio:>9,.0f}", flush=True)
    print(json.dumps({"benchmark": "dqn_update", "threads": args.threads,
                      "bf16": bf16_pays_off(torch.device("cpu")),
                      "fill_steps": args.fill_steps, "updates": args.updates,
                      "store_env_step_ms": store_ms,
                      "warmup": args.warmup, "replay_ratio": args.replay_ratio,
                      "compiled_loss": not args.no_compile,
                      "seconds": round(time.perf_counter() - start), "variants": rows}))


if __name__ == "__main__":
    main()
