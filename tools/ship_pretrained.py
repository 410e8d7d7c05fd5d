"""Package a trained run as a shipped agent in pretrained/NAME/.

    python tools/ship_pretrained.py RUN_DIR [--checkpoint step-N] [--name breakout-a2c]

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

from atari_rl.checkpoints import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    FINAL_POLICY,
    load_checkpoint,
    read_json,
    save_tensors,
    without_prefix,
)
from atari_rl.config import from_dict
from atari_rl.policy import PRETRAINED_ROOT
from atari_rl.training import policy_metadata


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "atari_rl.cli", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--checkpoint", default=None, help="a checkpoint name; default: final")
    parser.add_argument("--name", default="breakout-a2c")
    parser.add_argument("--games", type=int, default=100)
    args = parser.parse_args()

    out = PRETRAINED_ROOT / args.name
    out.mkdir(parents=True, exist_ok=True)
    config = from_dict(read_json(args.run_dir / CONFIG_FILE))
    if args.checkpoint:
        tensors, _ = load_checkpoint(args.run_dir / CHECKPOINT_DIR / args.checkpoint)
        num_actions = tensors["network.policy.weight"].shape[0]
        save_tensors(out / FINAL_POLICY, without_prefix("network", tensors),
                     policy_metadata(config, num_actions))
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
