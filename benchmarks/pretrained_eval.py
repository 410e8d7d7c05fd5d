"""The shipped agents over 100 whole games each, under each of `atari-rl evaluate`'s
protocols side by side (epsilon 0.01, greedy, sticky actions 0.25; all lives, up to 30
no-op starts, raw scores, 108,000-frame cap), against random play.

    python benchmarks/pretrained_eval.py [--name breakout-a2c] [--games 100]

Without --name, every agent in pretrained/ is scored.

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from atari_rl.cli import PRETRAINED_OUTPUT
from atari_rl.run_files import shipped_agents


def evaluate(name: str, games: int, policy: str) -> dict:
    out = Path(f"{PRETRAINED_OUTPUT}-{name}") / f"benchmark-{policy}.json"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "atari_rl.cli", "evaluate", "--pretrained", name,
                    "--games", str(games), "--policy", policy, "--out", str(out)], check=True)
    result = json.loads(out.read_text())
    return {"seconds": round(time.perf_counter() - start, 1), **{
        name: {key: played[key] for key in ("mean", "std", "median", "min", "max")}
        for name, played in result["protocols"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", action="append",
                        help="a shipped agent (repeatable); default: all of pretrained/")
    parser.add_argument("--games", type=int, default=100)
    args = parser.parse_args()
    names = args.name or shipped_agents()
    agents = {name: {"trained": evaluate(name, args.games, "trained"),
                     "random": evaluate(name, args.games, "random")} for name in names}
    print(json.dumps({"benchmark": "pretrained_eval", "games": args.games, "agents": agents}))


if __name__ == "__main__":
    main()
