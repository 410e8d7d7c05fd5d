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
from pathlib import Path

from atari_rl.cli import main as atari_rl
from atari_rl.policy import PRETRAINED_ROOT, load_policy
from atari_rl.run_files import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    EVENTS_FILE,
    FINAL_POLICY,
    GAMES_FILE,
    METRICS_FILE,
    VIDEO_FILE,
    VIDEO_INFO_FILE,
)

GIF_FRAMES = 2400  # emulator frames in the GIF: 40 s of play, about 2 MB


def cli(*args: str) -> None:
    if atari_rl(list(args)) != 0:
        raise SystemExit(f"atari-rl {' '.join(args)} failed")


def ship(run_dir: Path, name: str, checkpoint: str | None = None, games: int = 100,
         max_frames: int | None = None, root: Path = PRETRAINED_ROOT) -> Path:
    """Write root/name/ from a run (its final policy, or one of its checkpoints)."""
    out = root / name
    out.mkdir(parents=True, exist_ok=True)
    if checkpoint:
        load_policy(run_dir / CHECKPOINT_DIR / checkpoint).save(out / FINAL_POLICY)
    else:
        shutil.copy(run_dir / FINAL_POLICY, out / FINAL_POLICY)
    for file in (CONFIG_FILE, METRICS_FILE, GAMES_FILE, EVENTS_FILE):
        if (run_dir / file).is_file():
            shutil.copy(run_dir / file, out / file)
    cap = [] if max_frames is None else ["--max-frames", str(max_frames)]
    cli("plot", str(out))
    cli("evaluate", str(out), "--games", str(games), *cap)
    cli("evaluate", str(out), "--games", str(games), "--policy", "random", *cap)
    cli("record", str(out), "--gif", "--max-frames", str(min(GIF_FRAMES, max_frames or GIF_FRAMES)),
        "--out", str(out / VIDEO_FILE))
    (out / VIDEO_FILE).unlink()  # the GIF is what ships: the MP4 of a whole game is large
    (out / VIDEO_INFO_FILE).unlink(missing_ok=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--checkpoint", default=None, help="a checkpoint name; default: final")
    parser.add_argument("--name", required=True, help="e.g. breakout-a2c, breakout-dqn")
    parser.add_argument("--games", type=int, default=100)
    args = parser.parse_args()
    ship(args.run_dir, args.name, args.checkpoint, args.games)


if __name__ == "__main__":
    main()
