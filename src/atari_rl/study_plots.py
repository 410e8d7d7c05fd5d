"""Figures of a study: learning curves over seeds, and the final scores' interval estimates
and probabilities of improvement drawn the way the rliable paper draws them.

Each configuration keeps one colour in every figure (its place in study.json). As in
`plots.py`: matplotlib's object API on the Agg backend, PNG bytes out, nothing global.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from atari_rl.plots import COLORS, save_pngs
from atari_rl.run_files import FIGURES_DIR
from atari_rl.study_stats import (
    CONFIDENCE,
    ESTIMATES,
    REPS,
    Curve,
    Study,
    cached_aggregate,
    learning_curves,
    load_study,
)

ESTIMATE_LABELS = {"mean": "mean", "median": "median", "iqm": "IQM (interquartile mean)"}
BAR_HEIGHT = 0.6


def render_study_figures(study: Study, stats: dict[str, Any], curves: list[Curve]
                         ) -> dict[str, bytes]:
    """PNG bytes by file name: learning_curves.png, interval_estimates.png and
    improvement.png, each left out when the study has nothing to draw in it yet."""
    colors = {name: COLORS[i % len(COLORS)]
              for i, name in enumerate(study.configuration_names)}
    figures = {
        "learning_curves.png": _learning_curves(study, curves, colors) if curves else None,
        "interval_estimates.png": _interval_estimates(study, stats, colors)
        if stats["results"] else None,
        "improvement.png": _improvement(study, stats, colors) if stats["improvement"] else None,
    }
    return {name: png for name, png in figures.items() if png is not None}


def write_study_figures(study_dir: Path, out_dir: Path | None = None, reps: int = REPS,
                        seed: int = 0, points: int = 200) -> list[Path]:
    """Render the study's figures into out_dir (default STUDY/figures/), each atomically.

    The aggregate comes from STUDY/aggregate.json when it is up to date (else it is
    computed and saved there), so a report made afterwards does not bootstrap again.
    """
    study = load_study(study_dir)
    figures = render_study_figures(study, cached_aggregate(study, reps, seed),
                                   learning_curves(study, points))
    return save_pngs(figures, out_dir if out_dir is not None else study.path / FIGURES_DIR)


def _learning_curves(study: Study, curves: list[Curve], colors: dict[str, str]) -> bytes:
    from matplotlib.ticker import EngFormatter

    games = [g for g in study.games if any(c.game == g for c in curves)]
    figure, axes = _figure(len(games), 1, height=3.2, sharex=False)
    for ax, game in zip(axes[:, 0], games, strict=True):
        for curve in (c for c in curves if c.game == game):
            color = colors[curve.configuration]
            seeds = len(curve.runs)
            ax.fill_between(curve.steps, curve.low, curve.high, color=color, alpha=0.2,
                            linewidth=0)
            # dashed where fewer seeds than all have got there (a study in progress)
            ax.plot(curve.steps, curve.mean, color=color, linewidth=1.0, linestyle="--")
            ax.plot(curve.steps, np.where(curve.count == seeds, curve.mean, np.nan),
                    color=color, linewidth=1.6,
                    label=f"{curve.configuration}: mean of {seeds} seed{'s' * (seeds > 1)}, "
                          f"band: range over seeds")
        ax.set_title(game)
        ax.set_ylabel("points per game\n(mean of last 100 training games)")
        ax.set_xlabel("agent steps (4 frames each, summed over envs)")
        ax.xaxis.set_major_formatter(EngFormatter())
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    figure.suptitle("Training score: mean over seeds, shaded from the lowest seed to the "
                    "highest\n(dashed: not every seed has got this far)")
    return _png(figure)


def _interval_estimates(study: Study, stats: dict[str, Any], colors: dict[str, str]) -> bytes:
    games = [g for g in study.games if any(r["game"] == g for r in stats["results"])]
    rows = max(sum(r["game"] == g for r in stats["results"]) for g in games)
    figure, axes = _figure(len(games), len(ESTIMATES), height=0.9 + 0.45 * rows, sharex=False)
    for row, game in zip(axes, games, strict=True):
        results = [r for r in stats["results"] if r["game"] == game]
        labels = [r["configuration"] + (" (1 seed)" if r["num_seeds"] == 1 else "")
                  for r in results]
        for ax, name in zip(row, ESTIMATES, strict=True):
            _interval_bars(ax, [r[name] for r in results],
                           [colors[r["configuration"]] for r in results])
            ax.set_yticks(range(len(results)), labels if ax is row[0] else [])
            ax.set_title(f"{game}: {ESTIMATE_LABELS[name]}", fontsize="medium")
            ax.set_xlabel("evaluation score")
    figure.suptitle(f"Final score over seeds: point estimate and {CONFIDENCE:.0%} stratified "
                    f"bootstrap interval")
    return _png(figure)


def _improvement(study: Study, stats: dict[str, Any], colors: dict[str, str]) -> bytes:
    """One bar per unordered pair, in study order: P(Y > X) is its mirror, 1 - P(X > Y)."""
    order = {name: i for i, name in enumerate(study.configuration_names)}
    pairs = [r for r in stats["improvement"] if order[r["x"]] < order[r["y"]]]
    games = [g for g in study.games if any(r["game"] == g for r in pairs)]
    rows = max(sum(r["game"] == g for r in pairs) for g in games)
    figure, axes = _figure(len(games), 1, height=0.9 + 0.45 * rows, sharex=True)
    for ax, game in zip(axes[:, 0], games, strict=True):
        shown = [r for r in pairs if r["game"] == game]
        _interval_bars(ax, [{"estimate": r["probability"], "low": r["low"], "high": r["high"]}
                            for r in shown], [colors[r["x"]] for r in shown])
        ax.set_yticks(range(len(shown)), [f"{r['x']}  >  {r['y']}" for r in shown])
        ax.axvline(0.5, color="black", linestyle="--", linewidth=1.0)
        ax.set_xlim(0.0, 1.0)
        ax.set_title(game, fontsize="medium")
    axes[-1, 0].set_xlabel("P(X > Y): chance that a seed of X outscores a seed of Y")
    figure.suptitle(f"Probability of improvement, with {CONFIDENCE:.0%} bootstrap intervals")
    return _png(figure)


def _interval_bars(ax: Any, estimates: list[dict[str, float]], colors: list[str]) -> None:
    """rliable's style: the interval as a horizontal bar, the estimate as a black tick (which
    stays visible when one seed makes the interval a single point). First row on top."""
    for y, (estimate, color) in enumerate(zip(estimates, colors, strict=True)):
        ax.barh(y, estimate["high"] - estimate["low"], left=estimate["low"], height=BAR_HEIGHT,
                color=color, alpha=0.75)
        ax.vlines(estimate["estimate"], y - BAR_HEIGHT / 2, y + BAR_HEIGHT / 2, color="black",
                  linewidth=2.0)
    ax.set_ylim(len(estimates) - 0.5, -0.5)
    ax.grid(True, axis="x", alpha=0.3)


def _figure(rows: int, columns: int, height: float, sharex: bool) -> tuple[Any, np.ndarray]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10 if columns > 1 else 9, 0.9 + height * rows), dpi=100,
                    layout="constrained")
    axes = figure.subplots(rows, columns, sharex=sharex, squeeze=False)
    return figure, axes


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
