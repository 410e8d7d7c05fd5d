"""The write-up's N study: A2C with N = 5, 20, 50, 100 and a whole episode, on Breakout.

Each `seed-n*` preset (entropy 0.1, critic 0.5, argmax actions, learning rate decayed
linearly to 0 over the run) trains for --steps agent steps, then plays --games whole
evaluation games under `atari-rl evaluate`'s protocol. The run directories stay in runs/,
so their curves can be compared with `atari-rl report` or TensorBoard afterwards.

    python benchmarks/n_study.py                        # 1 M steps per N: about 1 h here
    python benchmarks/n_study.py --presets seed-n5 seed-n20 --steps 300000

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json

from common import learn_and_evaluate

from atari_rl.config import PRESETS

STUDY = [name for name in PRESETS if name.startswith("seed-n")]  # as config.py defines them


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=STUDY, choices=STUDY)
    parser.add_argument("--steps", type=int, default=1_000_000, help="agent steps per preset")
    parser.add_argument("--games", type=int, default=30, help="evaluation games per preset")
    args = parser.parse_args()

    results = []
    for preset in args.presets:
        result = learn_and_evaluate(preset, args.steps, args.games)
        results.append({"preset": preset, "n_steps": PRESETS[preset].changes["n_steps"],
                        **result})
        print(f"{preset:<10} {result['eval_mean']:7.1f} ± {result['eval_std']:5.1f} "
              f"in {result['train_hours']:.2f} h", flush=True)
    print(f"\n{'preset':<10}{'N':>9}{'eval mean':>11}{'std':>7}{'hours':>7}")
    for row in results:
        print(f"{row['preset']:<10}{row['n_steps']!s:>9}{row['eval_mean']:>11.1f}"
              f"{row['eval_std']:>7.1f}{row['train_hours']:>7.2f}")
    print(json.dumps({"benchmark": "n_study", "steps": args.steps, "games": args.games,
                      "results": results}))


if __name__ == "__main__":
    main()
