"""Package a trained run as a shipped agent in pretrained/NAME/.

    python tools/ship_pretrained.py RUN_DIR [--checkpoint step-N] --name breakout-dqn

Any algorithm: the policy is read with `load_policy`, which knows every registered network.
Copies the policy (network weights only, safetensors with its algo/game/num_actions
metadata), the resolved config, metrics.csv, games.csv and events.csv; then draws the
figures, plays the 100-game evaluation and the random baseline, and records a short GIF
with the project's own commands.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from atari_rl.checkpoints import CHECKPOINT_DIR, CONFIG_FILE, FINAL_POLICY, read_json, save_tensors
from atari_rl.config import from_dict
from atari_rl.policy import PRETRAINED_ROOT, load_policy
from atari_rl.training import policy_metadata


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "atari_rl.cli", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--checkpoint", default=None, help="a checkpoint name; default: final")
    parser.add_argument("--name", required=True, help="e.g. breakout-a2c, breakout-dqn")
    parser.add_argument("--games", type=int, default=100)
    args = parser.parse_args()

    out = PRETRAINED_ROOT / args.name
    out.mkdir(parents=True, exist_ok=True)
    config = from_dict(read_json(args.run_dir / CONFIG_FILE))
    if args.checkpoint:
        policy = load_policy(args.run_dir / CHECKPOINT_DIR / args.checkpoint)
        save_tensors(out / FINAL_POLICY, policy.network.state_dict(),
                     policy_metadata(config, policy.num_actions))
    else:
        shutil.copy(args.run_dir / FINAL_POLICY, out / FINAL_POLICY)
    for name in (CONFIG_FILE, "metrics.csv", "games.csv", "events.csv"):
        if (args.run_dir / name).is_file():
            shutil.copy(args.run_dir / name, out / name)
    cli("plot", str(out))
    cli("evaluate", str(out), "--games", str(args.games))
    cli("evaluate", str(out), "--games", str(args.games), "--policy", "random")
    cli("record", str(out), "--gif", "--max-frames", "2400", "--out", str(out / "video.mp4"))
    (out / "video.mp4").unlink()  # the GIF is what ships: the MP4 of a whole game is large
    (out / "video.json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
