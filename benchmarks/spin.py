"""How long OpenMP's threads spin after each parallel region, and PPO's training loop.

GNU OpenMP (torch's thread pool on Linux) lets its threads spin GOMP_SPINCOUNT rounds
after each parallel region before they sleep: 300,000 unless set. On 2 cores that spinning
takes the cores from the emulator threads that step next; too short a spin makes the
next forward pass wake sleeping threads. `import atari_rl` sets 20,000 unless the
environment already has a value. libgomp reads it when torch loads, so each setting runs
in its own process, interleaved, and each process times a real `training.train` of the
`ppo` preset after its warm-up (compilation), with every part of the loop timed:
- env_step: `AtariPipeline.step`, the emulators and the pipeline around them;
- act: `PPOAgent.act`; update: `PPOAgent.update`; rollout_add: storing the step.

    python benchmarks/spin.py                  # 3 pairs, ~12 minutes on 2 quiet cores
    python benchmarks/spin.py --pairs 1 --warmup 2048 --steps 2048   # smoke run

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

GOMP_DEFAULT_SPINCOUNT = "300000"  # libgomp's own, which atari_rl would otherwise replace


def measure(warmup: int, steps: int) -> dict[str, float]:
    """In this process: agent steps/s of a `ppo` run between warmup and warmup + steps,
    and each part's share of that time."""
    from common import profile_loop

    from atari_rl.envs import AtariPipeline
    from atari_rl.ppo import PPOAgent, PPOConfig
    from atari_rl.rollout import Rollout

    config = PPOConfig(steps=warmup + steps, log_every=10_240, torch_threads=2, env_threads=2,
                       checkpoint_every=10**9)
    parts = {"env_step": (AtariPipeline, "step"), "act": (PPOAgent, "act"),
             "rollout_add": (Rollout, "add"), "update": (PPOAgent, "update")}
    measured = profile_loop(config, PPOAgent, parts, warmup)
    return {"agent_steps_per_s": round(measured.agent_steps_per_s, 1),
            **{f"share_{name}": round(seconds / measured.wall_s, 3)
               for name, seconds in measured.seconds.items()}}


def run_setting(setting: str, warmup: int, steps: int) -> dict[str, float]:
    """One measurement in a fresh process, with the setting in its environment: "default"
    (libgomp's own spin), "passive" (OMP_WAIT_POLICY=PASSIVE), or a GOMP_SPINCOUNT."""
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    if setting == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        env["GOMP_SPINCOUNT"] = "0"
    else:
        env["GOMP_SPINCOUNT"] = GOMP_DEFAULT_SPINCOUNT if setting == "default" else setting
    out = subprocess.run([sys.executable, __file__, "--child", "--warmup", str(warmup),
                          "--steps", str(steps)], env=env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="interleaved repeats")
    parser.add_argument("--warmup", type=int, default=61_440, help="agent steps not timed")
    parser.add_argument("--steps", type=int, default=40_960, help="agent steps timed")
    parser.add_argument("--settings", default="default,20000",
                        help="comma-separated: default, passive, or a GOMP_SPINCOUNT")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import atari_rl  # noqa: F401  (before torch; keeps the environment's value)

        print(json.dumps(measure(args.warmup, args.steps)))
        return
    settings = args.settings.split(",")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in settings}
    for _ in range(args.pairs):
        for name in settings:
            result = run_setting(name, args.warmup, args.steps)
            results[name].append(result)
            print(f"{name:8s} {result['agent_steps_per_s']:8,.0f} agent steps/s  {result}",
                  flush=True)
    summary = {name: {"agent_steps_per_s": [r["agent_steps_per_s"] for r in runs],
                      "median": statistics.median(r["agent_steps_per_s"] for r in runs)}
               for name, runs in results.items()}
    print(json.dumps({"benchmark": "spin", "algo": "ppo", "threads": 2, "results": summary}))


if __name__ == "__main__":
    main()
