"""Resident memory of a training run stays flat once warm.

Trains each algorithm for a fixed number of agent steps in a child process and samples
its resident memory (RSS) every second. Reports RSS at the start (after warm-up: the
first 10% of the run, and for DQN until its replay memory is full), the middle and the
end, the growth after warm-up (target: at most 5%), and for DQN the pre-flight estimate
of its replay memory (what the memory itself takes against that estimate is measured by
benchmarks/replay_memory.py, which fills it alone).

    python benchmarks/memory_soak.py                      # a2c and dqn, 400,000 steps each
    python benchmarks/memory_soak.py --algos dqn --steps 1000000 --buffer-size 1000000

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from atari_rl.dqn import DQNConfig
from atari_rl.replay import ReplayMemory

GROWTH_TARGET = 0.05


def soak(algo: str, steps: int, buffer_size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "atari_rl.cli", "train", "--algo", algo, "--steps",
                   str(steps), "--run-dir", str(Path(tmp) / "run"), "--checkpoint-every",
                   str(max(steps // 4, 1))]
        if algo == "dqn":
            command += ["--buffer-size", str(buffer_size)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True)
        child = psutil.Process(process.pid)
        samples: list[float] = []
        while process.poll() is None:
            try:
                samples.append(child.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(1.0)
        if process.returncode != 0:
            raise SystemExit(f"{algo} run failed: {process.stderr.read().strip()[-500:]}")
    # A replay memory grows until it is full and its arena swept: DQN is warm after that.
    warm_fraction = 0.1 if algo != "dqn" else min(0.9, max(0.1, 1.5 * buffer_size / steps))
    warm = samples[int(len(samples) * warm_fraction):]
    start, middle, end = warm[0], warm[len(warm) // 2], warm[-1]
    result = {"rss_start_mb": start / 2**20, "rss_middle_mb": middle / 2**20,
              "rss_end_mb": end / 2**20, "rss_peak_mb": max(warm) / 2**20,
              "growth_after_warmup": (max(warm) - start) / start}
    if algo == "dqn":  # the memory's own growth against it: benchmarks/replay_memory.py
        estimate = ReplayMemory.bytes_estimate(buffer_size, DQNConfig().num_envs)
        result["replay_estimate_mb"] = estimate / 2**20
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["a2c", "dqn"])
    parser.add_argument("--steps", type=int, default=400_000)
    parser.add_argument("--buffer-size", type=int, default=100_000)
    args = parser.parse_args()
    result: dict[str, object] = {"benchmark": "memory_soak", "steps": args.steps,
                                 "growth_target": GROWTH_TARGET}
    for algo in args.algos:
        result[algo] = soak(algo, args.steps, args.buffer_size)
        print(f"{algo}: {result[algo]}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
