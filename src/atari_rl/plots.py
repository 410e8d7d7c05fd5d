"""Figures of a run, or of several runs overlaid, from its CSV files alone.

The set is the write-up's (entropy against the uniform policy's ln(num_actions), actor and
critic loss, episode length, rolling mean score over 100 and over 20 games, best score)
plus the gradient norm, learning rate and speed, and the panels each algorithm declares
for its own statistics (`algorithms.py`). A panel whose column no run has is left out, so
runs of different algorithms share the figures. Everything is drawn with matplotlib's
object API on the Agg backend: no display, no global pyplot state, PNG bytes out (the
report embeds them without touching the disk).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atari_rl.checkpoints import atomic_write, is_run_dir, read_json
from atari_rl.policy import action_names, uniform_entropy
from atari_rl.run_files import CONFIG_FILE, EVENTS_FILE, GAMES_FILE, METRICS_FILE

X_AXES = ("steps", "games")
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
          "#17becf", "#bcbd22", "#7f7f7f"]


@dataclass
class RunData:
    """What the figures need from a run directory."""

    path: Path
    label: str
    config: dict[str, Any]
    metrics: dict[str, np.ndarray]  # metrics.csv by column; empty before the first row
    games: dict[str, np.ndarray]  # per game: step, number, score, length and rolling stats
    events: list[dict[str, str]] = field(default_factory=list)  # events.csv: cliff detector

    def event_positions(self, x: str) -> list[tuple[float, str]]:
        """Where the cliff detector fired, on the chosen x axis, with what it saw."""
        positions = []
        for event in self.events:
            step = _number(event.get("step", ""))
            if x == "games":
                step = float(np.searchsorted(self.games.get("step", np.array([])), step,
                                             side="right"))
            positions.append((step, f"{event.get('kind')} ({event.get('reaction')})"))
        return positions

    @property
    def num_actions(self) -> int:
        return len(action_names(self.config["game"]))

    def series(self, source: str, column: str, x: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(x, y) for a column, or None when the run does not have it (or it is all NaN)."""
        table = self.metrics if source == "metrics" else self.games
        if column not in table or not np.isfinite(table[column]).any():
            return None
        if source == "metrics":
            xs = table["step"] if x == "steps" else table.get("games")
        else:
            xs = table["step"] if x == "steps" else table["number"]
        return (xs, table[column]) if xs is not None else None


def load_run(path: Path) -> RunData:
    """Read a run directory; ValueError with one line when it is not one."""
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if not is_run_dir(path):
        raise ValueError(f"{path} is not a run directory (it has no {CONFIG_FILE})")
    config = read_json(path / CONFIG_FILE)
    if "game" not in config:
        raise ValueError(f"{path / CONFIG_FILE} does not name a game")
    action_names(config["game"])  # an unknown game fails here, with its own message
    metrics = read_csv(path / METRICS_FILE)
    games = game_series(read_csv(path / GAMES_FILE))
    events_file = path / EVENTS_FILE
    events = list(csv.DictReader(events_file.open(newline=""))) if events_file.is_file() else []
    return RunData(path=path, label=path.name, config=config, metrics=metrics, games=games,
                   events=events)


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """Columns of a CSV of numbers as float arrays (empty cells and 'nan' become NaN)."""
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 2:
        return {}
    header, body = rows[0], [r for r in rows[1:] if len(r) == len(rows[0])]
    return {name: np.array([_number(r[i]) for r in body]) for i, name in enumerate(header)}


def game_series(games: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-game rolling means over 100 and 20 games and the best score so far.

    Computed from games.csv rather than read from metrics.csv, so they exist for every game
    and on a games axis; like the training ScoreBoard, early means average what there is.
    """
    if "score" not in games or len(games["score"]) == 0:
        return {}
    score, length = games["score"], games["length"]
    return {
        "step": games["step"],
        "number": np.arange(1, len(score) + 1, dtype=np.float64),
        "score": score,
        "length": length,
        "mean100": rolling_mean(score, 100),
        "mean20": rolling_mean(score, 20),
        "best": np.maximum.accumulate(score),
        "length_mean100": rolling_mean(length, 100),
    }


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` values at each point (fewer at the start)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


@dataclass(frozen=True)
class Panel:
    column: str
    ylabel: str
    source: str = "metrics"  # or "games" (the series of `game_series`)
    log: bool = False
    reference: str = ""  # "uniform entropy" or "uniform probability": a dashed line
    dots: str = ""  # a raw per-game column drawn faintly under the line


@dataclass(frozen=True)
class FigureSpec:
    name: str
    title: str
    panels: tuple[Panel, ...]


COMMON_FIGURES = (  # what every run has; each algorithm adds its own (algorithms.py)
    FigureSpec("score", "Score: rolling mean over the last 100 and the last 20 games", (
        Panel("mean100", "points per game\n(mean of last 100)", "games"),
        Panel("mean20", "points per game\n(mean of last 20)", "games"),
    )),
    FigureSpec("best_score", "Best game score so far", (
        Panel("best", "points", "games"),
    )),
    FigureSpec("episode_length", "Game length (all lives)", (
        Panel("length_mean100", "agent steps per game\n(dots: each game; line: mean of 100)",
              "games", dots="length"),
    )),
)
# What every actor-critic reports (A2C, PPO): its policy's entropy and its critic's values.
POLICY_ENTROPY = FigureSpec("entropy", "Policy entropy: at the dashed line the policy is uniform", (
    Panel("entropy", "entropy (nats)", reference="uniform entropy"),
    Panel("max_action_prob", "probability of the\nlikeliest action",
          reference="uniform probability"),
))
STATE_VALUES = FigureSpec("value", "Value estimates", (
    Panel("value_mean", "mean V(s)\n(clipped-reward units)"),
    Panel("explained_variance", "explained variance\nof the returns"),
))
COMMON_LAST = (
    FigureSpec("grad_norm", "Gradient norm (L2, before clipping)", (
        Panel("grad_norm", "gradient norm", log=True),
    )),
    FigureSpec("learning_rate", "Learning rate", (Panel("learning_rate", "learning rate"),)),
    FigureSpec("speed", "Training speed", (Panel("steps_per_s", "agent steps per second"),)),
)


def figure_specs() -> list[tuple[FigureSpec, ...]]:
    """The common figures and every algorithm's, grouped by name: the specs of one name are
    drawn as one figure (so that an A2C and a DQN run overlay their losses); a panel is drawn
    only where some run has its column."""
    from atari_rl.algorithms import algorithms

    groups: dict[str, list[FigureSpec]] = {}
    declared = [f for algorithm in algorithms().values() for f in algorithm.figures]
    for spec in (*COMMON_FIGURES, *declared, *COMMON_LAST):
        groups.setdefault(spec.name, []).append(spec)
    return [tuple(group) for group in groups.values()]


def figure_title(group: Sequence[FigureSpec], drawn: Sequence[Panel]) -> str:
    """The title of the smallest spec that holds every drawn panel (the one whose panels are
    exactly those drawn, where there is one), else (runs of several algorithms overlaid) the
    drawn specs' titles joined.

    A DQN run's losses must not be titled after A2C's critic, nor an A2C run's learning rate
    after PPO's clip range, just because that algorithm was registered first.
    """
    shown = set(drawn)
    covering = min((spec for spec in group if shown <= set(spec.panels)),
                   key=lambda spec: len(spec.panels), default=None)
    if covering is not None:
        return covering.title
    titles = [spec.title for spec in group if shown & set(spec.panels)]
    return " | ".join(dict.fromkeys(titles))


def label_runs(runs: list[RunData]) -> None:
    """Legend labels: the directory names, plus the settings that differ between the runs."""
    names = [r.path.name for r in runs]
    if len(set(names)) < len(names):
        names = [f"{r.path.parent.name}/{r.path.name}" for r in runs]
    differing = [key for key in runs[0].config
                 if len({str(r.config.get(key)) for r in runs}) > 1] if len(runs) > 1 else []
    for run, name in zip(runs, names, strict=True):
        settings = ", ".join(f"{k}={run.config.get(k)}" for k in differing[:3])
        run.label = f"{name} ({settings})" if settings else name


def render_figures(runs: list[RunData], x: str = "steps") -> dict[str, bytes]:
    """PNG bytes of every figure that some run has data for, by file name."""
    if x not in X_AXES:
        raise ValueError(f"--x must be steps or games, not '{x}'")
    figures = {}
    for group in figure_specs():
        png = _render(group, runs, x)
        if png is not None:
            figures[f"{group[0].name}.png"] = png
    return figures


def write_figures(runs: list[RunData], out_dir: Path, x: str = "steps") -> list[Path]:
    """Render the figures and write them into out_dir, each file atomically."""
    return save_pngs(render_figures(runs, x), out_dir)


def save_pngs(figures: dict[str, bytes], out_dir: Path) -> list[Path]:
    """Write PNG bytes by file name into out_dir, each file atomically."""
    paths = []
    for name, png in figures.items():
        path = out_dir / name
        atomic_write(path, lambda p, png=png: p.write_bytes(png))
        paths.append(path)
    return paths


def _render(group: tuple[FigureSpec, ...], runs: list[RunData], x: str) -> bytes | None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    every = dict.fromkeys(panel for spec in group for panel in spec.panels)
    panels = [p for p in every if any(r.series(p.source, p.column, x) for r in runs)]
    if not panels:
        return None
    figure = Figure(figsize=(9, 0.8 + 2.6 * len(panels)), dpi=100, layout="constrained")
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels, strict=True):
        for i, run in enumerate(runs):
            _draw(ax, panel, run, x, COLORS[i % len(COLORS)])
            for position, what in run.event_positions(x):
                ax.axvline(position, color=COLORS[i % len(COLORS)], linestyle=":",
                           linewidth=1.2, label=f"cliff detector: {what}")
        _draw_reference(ax, panel, runs)
        ax.set_ylabel(panel.ylabel)
        if panel.log:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        if len(runs) > 1 or panel.reference or any(r.events for r in runs):
            ax.legend(fontsize="small", loc="best")
    axes[-1].set_xlabel("agent steps (4 frames each, summed over envs)" if x == "steps"
                        else "games played (all lives)")
    if x == "steps":
        axes[-1].xaxis.set_major_formatter(EngFormatter())
    figure.suptitle(figure_title(group, panels))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _draw(ax: Any, panel: Panel, run: RunData, x: str, color: str) -> None:
    series = run.series(panel.source, panel.column, x)
    if series is None:
        return
    xs, ys = series
    if panel.log:
        ys = np.where(ys > 0, ys, np.nan)
    if panel.dots:
        dots = run.series(panel.source, panel.dots, x)
        if dots is not None:
            ax.scatter(*dots, s=9, color=color, alpha=0.45, linewidths=0)
    ax.plot(xs, ys, color=color, linewidth=1.4, label=run.label)


def _draw_reference(ax: Any, panel: Panel, runs: list[RunData]) -> None:
    """The uniform policy: entropy ln(A) nats, or probability 1/A, for each game's A."""
    if not panel.reference:
        return
    for num_actions in sorted({r.num_actions for r in runs}):
        if panel.reference == "uniform entropy":
            value = uniform_entropy(num_actions)
            text = f"uniform policy: ln {num_actions} = {value:.3f}"
        else:
            value = 1.0 / num_actions
            text = f"uniform policy: 1/{num_actions} = {value:.3f}"
        ax.axhline(value, color="black", linestyle="--", linewidth=1.0, label=text)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan
