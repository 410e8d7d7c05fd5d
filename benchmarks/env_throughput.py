"""Agent steps per second of our env pipeline, bare ale-py, and stable-baselines3's pipeline.

    .venv/bin/python benchmarks/env_throughput.py [--steps 40000] [--repeats 3]

All three play Breakout with the same random actions in one process. Our pipeline adds
life-loss episodes, forced FIRE, first-frame stacking and score bookkeeping in numpy on
top of ale-py's C++ vector env; the bare env shows what that costs, and SB3's
`make_atari_env` + `VecFrameStack` (Python wrappers, one emulator after the other) is the
usual alternative. The pipelines take turns in short chunks, in a random order each
time, so that other load on a shared machine hits them alike, and the median of the
repeats is reported. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sb3_peer import sb3_breakout

from atari_rl.envs import AtariPipeline, EnvConfig

FRAMESKIP = 4


@dataclass
class Pipeline:
    """A vector of games behind one `step(actions)`; only throughput is looked at."""

    name: str
    step: Callable[[np.ndarray], object]
    close: Callable[[], None]
    num_actions: int
    rates: list[float] = field(default_factory=list)  # agent steps/s, one per repeat


def ours(num_envs: int, threads: int, seed: int) -> Pipeline:
    pipeline = AtariPipeline(EnvConfig(num_envs=num_envs, num_threads=threads, seed=seed))
    pipeline.reset()
    return Pipeline("ours: AtariPipeline", pipeline.step, pipeline.close,
                    pipeline.num_actions)


def bare(num_envs: int, threads: int, seed: int) -> Pipeline:
    from ale_py.vector_env import AtariVectorEnv

    env = AtariVectorEnv("breakout", num_envs, num_threads=threads)  # default preprocessing
    env.reset(seed=seed)
    return Pipeline("bare: ale_py AtariVectorEnv", env.step, env.close,
                    int(env.single_action_space.n))


def sb3(num_envs: int, threads: int, seed: int) -> Pipeline:
    """SB3's Atari wrappers in a DummyVecEnv; `threads` does not apply to it."""
    try:
        env = sb3_breakout(num_envs, seed)
    except ImportError as error:
        raise SystemExit(f"{error}: install the bench extras, pip install -e '.[bench]'") from None
    env.reset()

    def step(actions: np.ndarray) -> object:
        return env.step(actions)

    return Pipeline("sb3: make_atari_env + VecFrameStack", step, env.close,
                    int(env.action_space.n))


def seconds_to_play(pipeline: Pipeline, actions: np.ndarray) -> float:
    """Steps every env once per row of `actions`; actions are drawn beforehand, untimed."""
    start = time.perf_counter()
    for row in actions:
        pipeline.step(row)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40_000,
                        help="agent steps timed per pipeline and repeat (all envs together)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median is kept")
    parser.add_argument("--chunk", type=int, default=2_000,
                        help="agent steps each pipeline plays before the next one's turn")
    parser.add_argument("--warmup", type=int, default=2_000, help="untimed agent steps first")
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="emulator threads (ours, bare)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pipelines = [make(args.envs, args.threads, args.seed) for make in (ours, bare, sb3)]
    assert len({p.num_actions for p in pipelines}) == 1, "the pipelines disagree on actions"
    rng = np.random.default_rng(args.seed)
    order_rng = np.random.default_rng(args.seed + 1)

    def draw(agent_steps: int) -> np.ndarray:
        rows = max(1, agent_steps // args.envs)
        return rng.integers(0, pipelines[0].num_actions, size=(rows, args.envs))

    for pipeline in pipelines:
        seconds_to_play(pipeline, draw(args.warmup))
    for repeat in range(args.repeats):
        actions = draw(args.steps)  # the same actions for every pipeline in this repeat
        seconds = [0.0] * len(pipelines)
        for chunk in np.array_split(actions, max(1, args.steps // args.chunk)):
            # Take turns, so that other load hits all alike, in a new random order each
            # time: whichever pipeline plays right after SB3's chunk runs up to 15% slower
            # (measured), and that must not always be the same one.
            for i in order_rng.permutation(len(pipelines)):
                seconds[i] += seconds_to_play(pipelines[i], chunk)
        for pipeline, spent in zip(pipelines, seconds, strict=True):
            pipeline.rates.append(actions.size / spent)
            print(f"repeat {repeat + 1}/{args.repeats} {pipeline.name}: "
                  f"{pipeline.rates[-1]:,.0f} agent steps/s", file=sys.stderr, flush=True)
    for pipeline in pipelines:
        pipeline.close()

    median = {p.name: statistics.median(p.rates) for p in pipelines}
    ours_rate, bare_rate, sb3_rate = median.values()
    print(f"\nBreakout, {args.envs} envs, random actions, {args.steps:,} agent steps x "
          f"{args.repeats} repeats (median kept), {args.threads} emulator threads")
    print(f"{'pipeline':<38}{'median steps/s':>15}{'best steps/s':>14}{'frames/s':>10}"
          f"{'vs bare':>9}")
    for pipeline in pipelines:
        rate = median[pipeline.name]
        print(f"{pipeline.name:<38}{rate:>15,.0f}{max(pipeline.rates):>14,.0f}"
              f"{rate * FRAMESKIP:>10,.0f}{rate / bare_rate:>9.2f}")
    print(json.dumps({
        "benchmark": "env_throughput",
        "num_envs": args.envs,
        "num_threads": args.threads,
        "steps": args.steps,
        "repeats": args.repeats,
        "statistic": "median",
        "ours_steps_per_s": round(ours_rate, 1),
        "bare_steps_per_s": round(bare_rate, 1),
        "sb3_steps_per_s": round(sb3_rate, 1),
        "ours_vs_bare": round(ours_rate / bare_rate, 3),
        "ours_vs_sb3": round(ours_rate / sb3_rate, 3),
    }))


if __name__ == "__main__":
    main()
