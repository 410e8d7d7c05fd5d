"""A study run for its results: `atari-rl study`, then its aggregate as one JSON line.

    python benchmarks/study.py write-up-entropy --steps 500000 --seeds 0,1,2
    python benchmarks/study.py n-study --steps 1000000 --seeds 0 --games 30

Any `atari-rl study` option passes through. Run again with the same options to resume a
study that was stopped. The last line of output is one JSON object: per configuration,
the seeds' scores and their mean, median and IQM with 95% bootstrap intervals.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from atari_rl.study import DEFAULT_OUT, load_spec


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__)
    if "--out" not in args:
        args += ["--out", str(DEFAULT_OUT / f"study-{load_spec(args[0]).name}")]
    out = Path(args[args.index("--out") + 1])
    start = time.perf_counter()
    code = subprocess.run([sys.executable, "-m", "atari_rl.cli", "study", *args]).returncode
    aggregate = json.loads((out / "aggregate.json").read_text())
    results = [{key: row[key] for key in ("configuration", "game", "seeds", "scores", "mean",
                                           "median", "iqm")} for row in aggregate["results"]]
    print(json.dumps({"benchmark": "study", "study": aggregate["study"], "exit_code": code,
                      "hours": round((time.perf_counter() - start) / 3600, 3),
                      "trials": aggregate["trials"], "results": results}))


if __name__ == "__main__":
    main()
