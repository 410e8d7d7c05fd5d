"""What a study directory says: its trials, their aggregate scores with confidence intervals,
and their learning curves. No Ray and no training: the files of the study alone.

A study runs several configurations x seeds (x games) of ordinary training runs. One seed
proves little, so each (configuration, game) is summarised the way the rliable paper
(Agarwal et al., 2021, "Deep RL at the Edge of the Statistical Precipice") asks: mean,
median and interquartile mean (IQM) of the seeds' final scores, each with a 95% stratified
bootstrap confidence interval, and the probability that one configuration beats another
on a random pair of seeds. The bootstrap and the IQM are rliable's own, not re-implemented
here. With one seed every interval is a single point: it is kept, and flagged by the report.

The final score of a trial is its evaluation mean (`evaluation.json`, copied into
`trial.json` as "score"). Only finished trials are aggregated; a study in progress can
still be plotted, since the learning curves read every non-failed run's `games.csv`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from atari_rl.checkpoints import read_json, write_json
from atari_rl.plots import game_series, read_csv
from atari_rl.run_files import EVALUATION_FILE, GAMES_FILE, TRIAL_FILE
from atari_rl.study import STUDY_FILE

RUNS_DIR = "runs"
AGGREGATE_FILE = "aggregate.json"
AGGREGATE_FORMAT = 1
STATUSES = ("finished", "failed", "pending")
ESTIMATES = ("mean", "median", "iqm")
CONFIDENCE = 0.95
REPS = 50_000  # bootstrap replications: rliable's default
CURVE_WINDOW = "mean100"  # the learning curve: rolling mean of the last 100 training games


@dataclass(frozen=True)
class TrialResult:
    """One run of the study: its plan (from study.json) and how it ended (trial.json)."""

    run: str
    configuration: str
    game: str
    seed: int
    path: Path  # runs/<run>/, which may not exist yet
    status: str  # one of STATUSES
    score: float | None = None  # evaluation mean, for a finished trial
    error: str | None = None  # one line, for a failed trial
    log: str | None = None  # the trial's log file
    train_seconds: float | None = None


@dataclass
class Study:
    """A study directory, read once."""

    path: Path
    id: str
    name: str
    description: str
    spec: dict[str, Any]
    configurations: list[dict[str, Any]]
    trials: list[TrialResult]

    @property
    def configuration_names(self) -> list[str]:
        """In study.json's order; a trial's configuration that is not listed comes last."""
        names = [c["name"] for c in self.configurations]
        return names + [n for n in dict.fromkeys(t.configuration for t in self.trials)
                        if n not in names]

    @property
    def games(self) -> list[str]:
        return list(dict.fromkeys(t.game for t in self.trials))

    def counts(self) -> dict[str, int]:
        counts = {status: sum(t.status == status for t in self.trials) for status in STATUSES}
        return {**counts, "total": len(self.trials)}


def is_study_dir(path: Path) -> bool:
    return (Path(path) / STUDY_FILE).is_file()


def load_study(study_dir: Path) -> Study:
    """Read a study directory; ValueError with one line when it is not one."""
    path = Path(study_dir)
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if not is_study_dir(path):
        raise ValueError(f"{path} is not a study directory (it has no {STUDY_FILE})")
    try:
        data = read_json(path / STUDY_FILE)
        trials = [_trial(path, plan) for plan in data["trials"]]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path / STUDY_FILE} is not a study description: "
                         f"{type(error).__name__} {error}") from None
    return Study(path=path, id=str(data.get("id", "")), name=str(data.get("name", path.name)),
                 description=str(data.get("description", "")), spec=data.get("spec", {}),
                 configurations=list(data.get("configurations", [])), trials=trials)


def _trial(study_dir: Path, plan: dict[str, Any]) -> TrialResult:
    """A trial's plan, with its outcome when trial.json says it ended."""
    run_dir = study_dir / RUNS_DIR / plan["run"]
    trial = TrialResult(run=plan["run"], configuration=plan["configuration"], game=plan["game"],
                  seed=int(plan["seed"]), path=run_dir, status="pending")
    if not (run_dir / TRIAL_FILE).is_file():
        return trial
    try:
        ended = read_json(run_dir / TRIAL_FILE)
    except json.JSONDecodeError as error:  # written atomically, so only a damaged disk
        return replace(trial, error=f"unreadable {TRIAL_FILE}: {error}")
    status = ended.get("status")
    status = status if status in ("finished", "failed") else "pending"
    score = ended.get("score")
    if status == "finished" and score is None and (run_dir / EVALUATION_FILE).is_file():
        score = read_json(run_dir / EVALUATION_FILE).get("mean")
    seconds = ended.get("train_seconds")
    return replace(trial, status=status, score=None if score is None else float(score),
                   error=ended.get("error"), log=ended.get("log"),
                   train_seconds=None if seconds is None else float(seconds))


# --- final scores: point estimates and bootstrap intervals ---------------------------------

def interval_estimates(scores: Sequence[float], reps: int = REPS,
                       seed: int = 0) -> dict[str, dict[str, float]]:
    """Mean, median and IQM of the seeds' scores, each with its 95% bootstrap interval.

    The score matrix is (num_seeds x 1 task), so the stratified bootstrap resamples seeds.
    The median is numpy's over the seeds: rliable's aggregate_median is the median over
    tasks of each task's mean, which with a single task is just the mean again. Below 4 seeds
    the IQM trims nothing (a quarter of 3 rounds down to 0) and equals the mean.
    """
    if len(scores) == 1:  # every resample is the one seed: no need to draw 50,000 of them
        only = float(scores[0])
        return {name: {"estimate": only, "low": only, "high": only} for name in ESTIMATES}
    from rliable import library, metrics

    def estimates(matrix: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_mean(matrix), np.median(matrix),
                         metrics.aggregate_iqm(matrix)])

    matrix = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    with _seeded(seed) as random_state:
        points, intervals = library.get_interval_estimates(
            {"scores": matrix}, estimates, reps=reps, confidence_interval_size=CONFIDENCE,
            random_state=random_state)
    point, (low, high) = points["scores"], intervals["scores"]
    return {name: {"estimate": float(point[i]), "low": float(low[i]), "high": float(high[i])}
            for i, name in enumerate(ESTIMATES)}


def improvement(scores_x: Sequence[float], scores_y: Sequence[float], reps: int = REPS,
                seed: int = 0) -> dict[str, float]:
    """P(X > Y): the chance that a random seed of X outscores a random seed of Y (ties count
    half), with its 95% interval from a bootstrap that resamples each side's seeds apart.

    With one seed on each side every resample is the pair itself, so the interval is the
    point, computed without the bootstrap: rliable's takes about 20 s a pair here, and a
    one-seed study of 10 configurations has 45 pairs."""
    if len(scores_x) == len(scores_y) == 1:
        x, y = float(scores_x[0]), float(scores_y[0])
        only = 1.0 if x > y else 0.5 if x == y else 0.0
        return {"probability": only, "low": only, "high": only}
    from rliable import library, metrics

    pair = [np.asarray(s, dtype=np.float64).reshape(-1, 1) for s in (scores_x, scores_y)]
    with _seeded(seed) as random_state:
        points, intervals = library.get_interval_estimates(
            {"pair": pair}, metrics.probability_of_improvement, reps=reps,
            confidence_interval_size=CONFIDENCE, random_state=random_state)
    low, high = np.ravel(intervals["pair"])
    return {"probability": float(points["pair"]), "low": float(low), "high": float(high)}


@contextmanager
def _seeded(seed: int) -> Iterator[np.random.RandomState]:
    """A RandomState(seed) for rliable, and numpy's global generator seeded alike meanwhile.

    rliable 1.2.0's stratified bootstraps accept a random_state but draw their resamples
    with np.random.choice, from the global generator: without this, the same scores gave
    different intervals on every call. The global state is put back afterwards, so callers
    that rely on it see no change (not thread-safe, like anything that touches it).
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # arch deprecates the RandomState that rliable passes
            warnings.simplefilter("ignore", FutureWarning)
            yield np.random.RandomState(seed)
    finally:
        np.random.set_state(state)


def aggregate(study: Study, reps: int = REPS, seed: int = 0,
              earlier: dict[str, Any] | None = None) -> dict[str, Any]:
    """The study's numbers as plain JSON: trial counts, then per (configuration, game) with a
    finished trial its seeds' scores and estimates, then P(X > Y) for every ordered pair of
    configurations of the same game.

    Each bootstrap starts from RandomState(seed) afresh, so a number depends only on its own
    seeds' scores: adding a configuration leaves the others' intervals as they were.
    P(Y > X) is 1 - P(X > Y) on every bootstrap sample (ties count half to each side), so
    each unordered pair is bootstrapped once and its mirror derived: half the time, and the
    two rows agree exactly.

    `earlier`, an aggregate computed with the same reps, seed and confidence, lends the
    entries whose seeds and scores have not changed: a trial that finishes costs the
    bootstraps of its own configuration, not of the whole study again.
    """
    known = _reusable(earlier, reps, seed)
    results, improvements = [], []
    for game in study.games:
        finished = _finished_scores(study, game)
        unchanged: set[str] = set()  # configurations whose saved entries still hold
        for name, (seeds, scores) in finished.items():
            entry = {"configuration": name, "game": game, "num_seeds": len(seeds),
                     "seeds": seeds, "scores": scores}
            same = known.results.get((game, name))
            if _same_trials(same, entry):
                unchanged.add(name)
                estimates = {k: same[k] for k in ESTIMATES}
            else:
                estimates = interval_estimates(scores, reps, seed)
            results.append({**entry, **estimates})
        names = list(finished)
        for i, x in enumerate(names):
            for y in names[i + 1:]:
                same = known.improvement.get((game, x, y))
                if same and x in unchanged and y in unchanged:
                    forward = {k: same[k] for k in ("probability", "low", "high")}
                else:
                    forward = improvement(finished[x][1], finished[y][1], reps, seed)
                mirror = {"probability": 1.0 - forward["probability"],
                          "low": 1.0 - forward["high"], "high": 1.0 - forward["low"]}
                for a, b, values in ((x, y, forward), (y, x, mirror)):
                    improvements.append({"game": game, "x": a, "y": b, **values,
                                         "seeds_x": len(finished[a][0]),
                                         "seeds_y": len(finished[b][0])})
    order = {n: i for i, n in enumerate(study.configuration_names)}
    improvements.sort(key=lambda r: (study.games.index(r["game"]), order[r["x"]], order[r["y"]]))
    return {"format": AGGREGATE_FORMAT, "study": study.name, "confidence": CONFIDENCE,
            "reps": reps, "seed": seed, "trials": study.counts(), "results": results,
            "improvement": improvements, "inputs": _inputs(study, reps, seed)}


@dataclass
class _Earlier:
    """A saved aggregate's entries, by (game, configuration) and (game, x, y)."""

    results: dict[tuple[str, str], dict[str, Any]]
    improvement: dict[tuple[str, str, str], dict[str, Any]]


def _reusable(earlier: dict[str, Any] | None, reps: int, seed: int) -> _Earlier:
    """The entries of `earlier` that this computation may reuse: none unless it was made
    with the same format, reps, seed and confidence."""
    settings = {"format": AGGREGATE_FORMAT, "reps": reps, "seed": seed,
                "confidence": CONFIDENCE}
    if not earlier or any(earlier.get(k) != v for k, v in settings.items()):
        return _Earlier({}, {})
    return _Earlier({(r["game"], r["configuration"]): r for r in earlier.get("results", [])},
                    {(r["game"], r["x"], r["y"]): r for r in earlier.get("improvement", [])})


def _same_trials(saved: dict[str, Any] | None, now: dict[str, Any]) -> bool:
    return saved is not None and saved["seeds"] == now["seeds"] and saved["scores"] == now["scores"]


def _finished_scores(study: Study, game: str) -> dict[str, tuple[list[int], list[float]]]:
    """Per configuration (study order) with a scored finished trial: its seeds and scores."""
    finished: dict[str, tuple[list[int], list[float]]] = {}
    for name in study.configuration_names:
        trials = sorted((t for t in study.trials if t.configuration == name and t.game == game
                         and t.status == "finished" and t.score is not None),
                        key=lambda t: t.seed)
        if trials:
            finished[name] = ([t.seed for t in trials], [float(t.score) for t in trials])
    return finished


def _inputs(study: Study, reps: int, seed: int) -> dict[str, Any]:
    """Everything the aggregate depends on: when it is unchanged, a saved one is still right."""
    return {"reps": reps, "seed": seed, "confidence": CONFIDENCE,
            "trials": [[t.run, t.configuration, t.game, t.seed, t.status, t.score]
                       for t in study.trials]}


def write_aggregate(study_dir: Path, reps: int = REPS, seed: int = 0) -> Path:
    """Compute the aggregate afresh and write STUDY/aggregate.json atomically."""
    study = load_study(study_dir)
    path = study.path / AGGREGATE_FILE
    write_json(path, aggregate(study, reps, seed))
    return path


def cached_aggregate(study: Study, reps: int = REPS, seed: int = 0) -> dict[str, Any]:
    """STUDY/aggregate.json when it was computed from the same trials and settings, else the
    aggregate computed again, reusing the saved entries whose trials have not changed, and
    saved there. A 50,000-sample bootstrap takes 6 s a configuration and 20 s a pair of
    them here; `plot` then `report` of a finished study should pay for it once."""
    path = study.path / AGGREGATE_FILE
    inputs = json.loads(json.dumps(_inputs(study, reps, seed)))  # as JSON reads it back
    saved: dict[str, Any] = {}
    if path.is_file():
        with suppress(json.JSONDecodeError):
            saved = read_json(path)
        if saved.get("format") == AGGREGATE_FORMAT and saved.get("inputs") == inputs:
            return saved
    stats = aggregate(study, reps, seed, earlier=saved)
    write_json(path, stats)
    return stats


# --- learning curves ------------------------------------------------------------------------

@dataclass
class Curve:
    """A configuration's training curve on one game, over its seeds, on a common step grid.

    `mean` averages the seeds that have reached a grid point; `low` and `high` are the
    range (minimum and maximum) over those seeds, not a confidence interval; `count` says
    how many seeds that is, which falls below `len(runs)` where a seed ended earlier.
    """

    configuration: str
    game: str
    runs: list[str]
    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    count: np.ndarray


def band_on_grid(series: Sequence[tuple[np.ndarray, np.ndarray]], points: int = 200
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(grid, mean, low, high, count) of several (steps, values) curves.

    The grid runs from step 0 to the longest curve's last step, so a study in progress shows
    how far its furthest run got. Each curve is linearly interpolated between its points and
    undefined (NaN) before its first point and after its last one, rather than held flat:
    a seed that has not got there says nothing about it. Statistics are over the curves
    defined at each grid point; where none is, they are NaN and the count is 0.
    """
    ends = [float(steps[-1]) for steps, _ in series if len(steps)]
    grid = np.linspace(0.0, max(ends, default=0.0), points)
    rows = np.array([_interpolate(steps, values, grid) for steps, values in series]
                    ).reshape(len(series), points)
    defined = np.isfinite(rows)
    count = defined.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.where(defined, rows, 0.0).sum(axis=0) / count, np.nan)
    low = np.where(count > 0, np.where(defined, rows, np.inf).min(axis=0, initial=np.inf),
                   np.nan)
    high = np.where(count > 0, np.where(defined, rows, -np.inf).max(axis=0, initial=-np.inf),
                    np.nan)
    return grid, mean, low, high, count


def _interpolate(steps: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    if len(steps) == 0:
        return np.full(len(grid), np.nan)
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    last = np.append(steps[1:] != steps[:-1], True)  # games ending on one step: the last
    return np.interp(grid, steps[last], values[last], left=np.nan, right=np.nan)


def learning_curves(study: Study, points: int = 200) -> list[Curve]:
    """Per (configuration, game), the seeds' 100-game rolling mean training score from their
    games.csv, on a common step grid: mean over seeds and their range (see `band_on_grid`).

    Pending runs count, so a study in progress can be plotted; failed runs do not, since
    they will not reach the end. A (configuration, game) with no games yet is left out.
    """
    curves = []
    for game in study.games:
        for name in study.configuration_names:
            runs, series = [], []
            for trial in study.trials:
                if trial.configuration != name or trial.game != game or trial.status == "failed":
                    continue
                games = game_series(read_csv(trial.path / GAMES_FILE))
                if games:
                    runs.append(trial.run)
                    series.append((games["step"], games[CURVE_WINDOW]))
            if series:
                grid, mean, low, high, count = band_on_grid(series, points)
                curves.append(Curve(configuration=name, game=game, runs=runs, steps=grid,
                                    mean=mean, low=low, high=high, count=count))
    return curves

