"""One path for every number a run produces.

Plain CSV files that the commands (and pandas, and a person with `tail -f`) read while the
run is still going, and TensorBoard event files for the field's usual viewer:
- metrics.csv: one row every `log_every` agent steps, the learner's statistics averaged
  over the rows' updates, with the game scores and the speed at that point;
- games.csv: one row per finished game (all lives), raw score and length.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from tqdm import tqdm

from atari_rl.checkpoints import atomic_write
from atari_rl.envs import Episode
from atari_rl.run_files import EVENTS_FILE, GAMES_FILE, METRICS_FILE, TENSORBOARD_DIR

GAMES_COLUMNS = ["step", "env_id", "score", "length"]
EVENTS_COLUMNS = ["step", "kind", "reaction", "detail"]


def _nan_last(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else value


class ScoreBoard:
    """Raw game scores: the rolling means over 100 and 20 games and the best so far.

    The write-up averaged over 100 games only; 20 shows a collapse five times sooner.
    """

    def __init__(self) -> None:
        self.last100: deque[float] = deque(maxlen=100)
        self.last20: deque[float] = deque(maxlen=20)
        self.best = math.nan
        self.best_mean100 = math.nan  # once 100 games are in: what a collapse is measured from
        self.games = 0

    def add(self, score: float) -> None:
        self.last100.append(score)
        self.last20.append(score)
        self.best = score if math.isnan(self.best) else max(self.best, score)
        self.games += 1
        if len(self.last100) == self.last100.maxlen:
            self.best_mean100 = max(self.mean100, self.best_mean100, key=_nan_last)

    def state_dict(self) -> dict[str, Any]:
        return {"last100": list(self.last100), "best": _json_number(self.best),
                "best_mean100": _json_number(self.best_mean100), "games": self.games}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last100.clear()
        self.last100.extend(state["last100"])
        self.last20.clear()
        self.last20.extend(state["last100"][-20:])
        self.best = math.nan if state["best"] is None else state["best"]
        self.best_mean100 = math.nan if state["best_mean100"] is None else state["best_mean100"]
        self.games = state["games"]

    @property
    def mean100(self) -> float:
        return sum(self.last100) / len(self.last100) if self.last100 else math.nan

    @property
    def mean20(self) -> float:
        return sum(self.last20) / len(self.last20) if self.last20 else math.nan


class MetricsLogger:
    def __init__(self, run_dir: Path, log_every: int, start_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter  # slow import, only for training

        self.run_dir = run_dir
        self.log_every = log_every
        self.scores = ScoreBoard()
        self._tensorboard = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=start_step)
        self._games_file = _CsvFile(run_dir / GAMES_FILE, GAMES_COLUMNS)
        self._metrics_path = run_dir / METRICS_FILE
        self._metrics_file = None
        self._columns: list[str] = []
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._next_row = start_step + log_every
        self._row_time = time.perf_counter()
        self._row_step = start_step
        self.steps_per_s = math.nan

    def games(self, step: int, games: list[Episode]) -> None:
        for game in games:
            self.scores.add(game.score)
            self._games_file.writerow([step, game.env_id, game.score, game.steps])
            self._tensorboard.add_scalar("game/score", game.score, step)
            self._tensorboard.add_scalar("game/length", game.steps, step)

    def event(self, step: int, kind: str, reaction: str, detail: str) -> None:
        """A sign of collapse and what was done about it: events.csv, TensorBoard, stderr."""
        events = _CsvFile(self.run_dir / EVENTS_FILE, EVENTS_COLUMNS)
        events.writerow([step, kind, reaction, detail])
        events.close()
        self._tensorboard.add_text("cliff", f"{kind} ({reaction}): {detail}", step)
        print(f"atari-rl: step {step:,}: {kind}: {detail} -> {reaction}", file=sys.stderr,
              flush=True)

    def update(self, step: int, stats: dict[str, float]) -> None:
        """Add one update's statistics; write a row once log_every steps have passed."""
        for name, value in stats.items():
            if math.isfinite(value) or name not in self._sums:
                self._sums[name] = self._sums.get(name, 0.0) + value
                self._counts[name] = self._counts.get(name, 0) + 1
        if step >= self._next_row:
            self._write_row(step)

    def flush_row(self, step: int) -> None:
        """Write the statistics gathered so far as a row (before a checkpoint, at the end)."""
        if self._counts:
            self._write_row(step)

    def state_dict(self) -> dict[str, Any]:
        """Call right after flush_row: what a resumed run needs to log the same rows."""
        return {"next_row": self._next_row, "scores": self.scores.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._next_row = state["next_row"]
        self.scores.load_state_dict(state["scores"])

    def close(self, step: int) -> None:
        self.flush_row(step)
        self._tensorboard.close()
        for handle in (self._games_file, self._metrics_file):
            if handle is not None:
                handle.close()

    def _write_row(self, step: int) -> None:
        now = time.perf_counter()
        self.steps_per_s = (step - self._row_step) / max(now - self._row_time, 1e-9)
        self._row_time, self._row_step = now, step
        row = {name: self._sums[name] / self._counts[name] for name in self._sums}
        row.update(
            steps_per_s=self.steps_per_s,
            games=self.scores.games,
            score_mean100=self.scores.mean100,
            score_mean20=self.scores.mean20,
            best_score=self.scores.best,
        )
        if self._metrics_file is None:
            self._columns = _metrics_columns(self._metrics_path, ["step", *row])
            self._metrics_file = _CsvFile(self._metrics_path, self._columns)
        self._metrics_file.writerow([step, *(row.get(c, math.nan) for c in self._columns[1:])])
        self._metrics_file.flush()
        self._games_file.flush()
        for name, value in row.items():
            if math.isfinite(value):
                self._tensorboard.add_scalar(name, value, step)
        self._tensorboard.flush()
        self._sums.clear()
        self._counts.clear()
        self._next_row = step + self.log_every


def _metrics_columns(path: Path, columns: list[str]) -> list[str]:
    """The columns of a metrics file that this run's rows go under. A resumed run may log a
    statistic that its first part did not (the learner's threads, once resumed with
    `--torch-threads 0`): the file gets that column, the earlier rows `nan` in it, and
    every row keeps the header's order. Rows written under the old header would shift every
    later column by one."""
    if not path.is_file() or path.stat().st_size == 0:
        return columns
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    added = [c for c in columns if c not in header]
    if added:
        padded = [header + added] + [row + ["nan"] * len(added) for row in rows[1:]]

        def write(temporary: Path) -> None:
            with temporary.open("w", newline="") as out:
                csv.writer(out).writerows(padded)

        atomic_write(path, write)
    return header + added


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop the rows a killed run wrote after its last checkpoint, before resuming it."""
    for name in (METRICS_FILE, GAMES_FILE, EVENTS_FILE):
        path = run_dir / name
        if not path.is_file():
            continue
        lines = path.read_text().splitlines(keepends=True)
        kept = "".join(lines[:1] + [line for line in lines[1:]
                                    if int(line.split(",", 1)[0]) <= step])
        atomic_write(path, lambda p, text=kept: p.write_text(text))


class _CsvFile:
    """An appending CSV writer that writes its header only into a new file."""

    def __init__(self, path: Path, columns: list[str]):
        is_new = not path.exists() or path.stat().st_size == 0
        self._handle = path.open("a", newline="")
        self._writer = csv.writer(self._handle)
        if is_new:
            self._writer.writerow(columns)

    def writerow(self, values: list) -> None:
        self._writer.writerow(values)

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class Progress:
    """A progress bar on a terminal; plain periodic lines when output goes to a file."""

    def __init__(self, total: int, initial: int = 0, line_every_s: float = 30.0):
        self.total = total
        self._interactive = sys.stderr.isatty()
        self._bar = tqdm(total=total, initial=initial, unit="step", unit_scale=True,
                         dynamic_ncols=True, disable=not self._interactive)
        self._step = initial
        self._start_step = initial
        self._start = time.perf_counter()
        self._line_every_s = line_every_s
        self._next_line = self._start + line_every_s

    def update(self, step: int, scores: ScoreBoard) -> None:
        if self._interactive:
            self._bar.update(step - self._step)
            self._bar.set_postfix(score=f"{scores.mean20:.1f}", best=f"{scores.best:g}",
                                  refresh=False)
        elif time.perf_counter() >= self._next_line:
            self._print_line(step, scores)
            self._next_line += self._line_every_s
        self._step = step

    def close(self, scores: ScoreBoard) -> None:
        if self._interactive:
            self._bar.close()
        else:
            self._print_line(self._step, scores)

    def _print_line(self, step: int, scores: ScoreBoard) -> None:
        elapsed = time.perf_counter() - self._start
        rate = (step - self._start_step) / max(elapsed, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else math.inf
        print(
            f"step {step:,}/{self.total:,} ({100 * step / self.total:.0f}%) | {rate:,.0f} steps/s"
            f" | score mean20 {scores.mean20:.1f} mean100 {scores.mean100:.1f}"
            f" best {scores.best:g} | ETA {format_duration(eta)}",
            file=sys.stderr,
            flush=True,
        )


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
