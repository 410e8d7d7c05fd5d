"""A2C training speed on a machine that is not quiet: alone, beside a CPU-bound process,
and beside a second identical training run, under several thread settings.

Each case trains the `a2c` preset for --steps agent steps and reports the median steps/s
of its metrics.csv rows after --warmup steps (torch.compile compiles first). The thread
settings compared:
- auto: the defaults (`--torch-threads 0 --env-threads 0`), which count the free cores
  (`atari_rl.cores`);
- per-core: one learner and one emulator thread per core whatever else runs (the
  defaults before `cores.py`);
- 1+1: `--torch-threads 1 --env-threads 1`.

    python benchmarks/contention.py                 # ~20 minutes on 2 cores

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from atari_rl.run_files import METRICS_FILE

SETTINGS = {
    "auto": [],
    "per-core": ["--torch-threads", str(os.cpu_count()), "--env-threads", str(os.cpu_count())],
    "1+1": ["--torch-threads", "1", "--env-threads", "1"],
}
BUSY_LOOP = "while True: pass"


def train(run_dir: Path, steps: int, threads: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "atari_rl.cli", "train", "--preset", "a2c", "--steps",
         str(steps), "--log-every", "8000", "--checkpoint-every", str(10 * steps),
         "--run-dir", str(run_dir), *threads],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def steps_per_s(run_dir: Path, warmup: int) -> float:
    with (run_dir / METRICS_FILE).open() as handle:
        rows = [(int(r["step"]), float(r["steps_per_s"])) for r in csv.DictReader(handle)]
    rates = [rate for (previous, _), (_, rate) in zip(rows, rows[1:], strict=False)
             if previous >= warmup]
    return statistics.median(rates[:-1] if len(rates) > 2 else rates)


def measure(case: str, threads: list[str], steps: int, warmup: int) -> float:
    """Steps/s of the run under test, with the case's neighbour running beside it."""
    with tempfile.TemporaryDirectory() as root:
        neighbour = None
        if case == "busy process":
            neighbour = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        elif case == "second run":  # an identical run, started first, running throughout
            neighbour = train(Path(root) / "neighbour", 10 * steps, threads)
        try:
            run = train(Path(root) / "run", steps, threads)
            if run.wait() != 0:
                raise RuntimeError(f"the training run failed ({case}, {threads})")
            return steps_per_s(Path(root) / "run", warmup)
        finally:
            if neighbour is not None:
                neighbour.kill()
                neighbour.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120_000)
    parser.add_argument("--warmup", type=int, default=48_000)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--cases", nargs="+", default=["quiet", "busy process", "second run"],
                        choices=["quiet", "busy process", "second run"])
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    for case in args.cases:
        for name in args.settings:
            rate = measure(case, SETTINGS[name], args.steps, args.warmup)
            results.setdefault(case, {})[name] = round(rate)
            print(f"{case:<13} {name:<9} {rate:7,.0f} agent steps/s", flush=True)
    quiet = results.get("quiet", {})
    kept = {case: {name: round(rate / quiet[name], 2) for name, rate in rates.items()
                   if quiet.get(name)} for case, rates in results.items() if case != "quiet"}
    print(json.dumps({"benchmark": "contention", "cores": os.cpu_count(), "steps": args.steps,
                      "steps_per_s": results, "fraction_of_own_quiet_speed": kept}))


if __name__ == "__main__":
    main()
