"""Fill the replay memory with real Breakout play; measure its memory, fill rate and sampling.

    .venv/bin/python benchmarks/replay_memory.py [--transitions 1000000] [--codec zstd]

Resident memory is the process's RSS growth from before the memory is filled to after it
is full and sampled, per transition stored. A first fill touches only the arena pages its
frames need; `--capacity` below `--transitions` shows a long run, whose byte log has swept
the whole arena. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time

import numpy as np
import psutil

from atari_rl.envs import AtariPipeline, EnvConfig
from atari_rl.replay import FRAME_BUDGET, ReplayMemory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=1_000_000,
                        help="agent steps to store")
    parser.add_argument("--capacity", type=int, help="the memory's (default: --transitions)")
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="emulator threads")
    parser.add_argument("--codec", default="zstd", choices=["zstd", "lz4", "zlib"])
    parser.add_argument("--frame-budget", type=int, default=FRAME_BUDGET)
    parser.add_argument("--n-step", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=3000, help="batches timed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    capacity = args.capacity or args.transitions
    process = psutil.Process()
    pipeline = AtariPipeline(EnvConfig(num_envs=args.envs, num_threads=args.threads,
                                       seed=args.seed))
    memory = ReplayMemory(capacity, args.envs, n_step=args.n_step, codec=args.codec,
                          frame_budget=args.frame_budget, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    obs = pipeline.reset()
    gc.collect()
    rss_before = process.memory_info().rss

    memory.observe_reset(obs)
    steps = -(-args.transitions // args.envs)
    observe_s = 0.0
    start = time.perf_counter()
    for i in range(1, steps + 1):
        step = pipeline.step(rng.integers(0, pipeline.num_actions, args.envs))
        tick = time.perf_counter()
        memory.observe(step)
        observe_s += time.perf_counter() - tick
        if i % (steps // 10 or 1) == 0:
            print(f"{i * args.envs:,} agent steps, {len(memory):,} transitions stored, "
                  f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    fill_s = time.perf_counter() - start
    pipeline.close()

    for _ in range(20):
        memory.sample(args.batch_size)
    start = time.perf_counter()
    for _ in range(args.batches):
        memory.sample(args.batch_size)
    sample_s = time.perf_counter() - start
    gc.collect()
    rss_growth = process.memory_info().rss - rss_before

    stored = len(memory)
    estimate = ReplayMemory.bytes_estimate(capacity, args.envs, args.frame_budget)
    result = {
        "capacity": capacity,
        "agent_steps": steps * args.envs,
        "transitions": stored,
        "codec": args.codec,
        "n_step": args.n_step,
        "rss_growth_bytes": rss_growth,
        "rss_bytes_per_transition": round(rss_growth / stored, 1),
        "estimate_bytes": estimate,
        "estimate_bytes_per_transition": round(estimate / capacity, 1),
        "within_estimate": rss_growth <= estimate,
        "fill_transitions_per_s": round(steps * args.envs / fill_s),
        "observe_transitions_per_s": round(steps * args.envs / observe_s),
        "batch_size": args.batch_size,
        "sample_batches_per_s": round(args.batches / sample_s, 1),
    }
    print(f"stored {stored:,} transitions ({args.codec}): resident memory grew "
          f"{rss_growth / 1e6:,.0f} MB = {result['rss_bytes_per_transition']} B/transition "
          f"(bound {result['estimate_bytes_per_transition']} B)")
    print(f"fill: {result['fill_transitions_per_s']:,} transitions/s with emulation, "
          f"{result['observe_transitions_per_s']:,}/s in the memory alone")
    print(f"sampling: {result['sample_batches_per_s']:,} batches/s of {args.batch_size}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
