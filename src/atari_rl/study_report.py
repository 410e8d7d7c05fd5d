"""One self-contained HTML page about a study, from its directory alone.

What a reader of a study needs, in that order: which configurations were compared, their
final scores over seeds with 95% confidence intervals, the probability that one beats
another, the figures, then every trial with how it ended (a failed one's error and log, a
pending one's command to finish it). Same page style, embedding and readiness script as a
run's report (`report.py`), so the same headless-browser check applies.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

from atari_rl.checkpoints import atomic_write
from atari_rl.metrics import format_duration
from atari_rl.report import READY_SCRIPT, STYLE, _e, _figures, _hint, _table
from atari_rl.run_files import REPORT_FILE
from atari_rl.study import DEFAULT_PROTOCOLS
from atari_rl.study_plots import render_study_figures
from atari_rl.study_stats import (
    CONFIDENCE,
    REPS,
    Curve,
    Study,
    TrialResult,
    aggregate,
    cached_aggregate,
    learning_curves,
    load_study,
)

ONE_SEED = "1 seed: the interval is a single point"


def build_study_report(study: Study, stats: dict[str, Any] | None = None,
                       curves: list[Curve] | None = None, reps: int = REPS,
                       seed: int = 0) -> str:
    """The whole page as one string; stats and curves are computed when not given."""
    stats = stats if stats is not None else aggregate(study, reps, seed)
    curves = curves if curves is not None else learning_curves(study)
    counts = stats["trials"]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>atari-rl study: {_e(study.name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(study.name)}</h1>",
        f"<p>{_e(study.description)}</p>" if study.description else "",
        f'<p class="meta">Generated {time.strftime("%Y-%m-%d %H:%M")} by atari-rl from '
        f"{_e(study.path)} (study {_e(study.id)}). {counts['total']} trials: "
        f"{counts['finished']} finished, {counts['failed']} failed, "
        f"{counts['pending']} pending.</p>",
        "<h2>Configurations</h2>", _configurations(study),
        "<h2>Final scores</h2>",
        _hint(f"Each trial's score is the mean of its evaluation games under the "
              f"{_e(study.spec.get('protocols', DEFAULT_PROTOCOLS)[0])} protocol "
              f"(`atari-rl evaluate`). Over the seeds: mean, "
              f"median and IQM (the mean of the middle half), each with its "
              f"{CONFIDENCE:.0%} stratified bootstrap interval ({stats['reps']:,} samples, "
              f"seed {stats['seed']})."),
        _scores(study, stats),
        "<h2>Probability of improvement</h2>",
        _hint("P(X > Y): the chance that a random seed of X scores more than a random seed "
              "of Y (ties count half); 0.5 is a draw, and an interval that excludes 0.5 is "
              "a difference the seeds can tell apart."),
        _improvement(study, stats),
        "<h2>Figures</h2>", _figures(render_study_figures(study, stats, curves)),
        "<h2>Trials</h2>", _trials(study),
        f"<script>{READY_SCRIPT}</script>", "</body></html>",
    ]
    return "\n".join(part for part in parts if part)


def write_study_report(study_dir: Path, out: Path | None = None, reps: int = REPS,
                       seed: int = 0) -> Path:
    """Write the page to out (default STUDY/report.html) atomically; the aggregate is reused
    from STUDY/aggregate.json when it is up to date."""
    study = load_study(study_dir)
    page = build_study_report(study, cached_aggregate(study, reps, seed))
    out = out if out is not None else study.path / REPORT_FILE
    atomic_write(out, lambda p: p.write_text(page, encoding="utf-8"))
    return out


def format_estimate(estimate: dict[str, float]) -> str:
    """'12.3 [10.1, 14.5]': a point estimate and its interval."""
    return f"{estimate['estimate']:.1f} [{estimate['low']:.1f}, {estimate['high']:.1f}]"


def _configurations(study: Study) -> str:
    rows = [[c.get("name", ""), c.get("preset", ""),
             ", ".join(f"{k}={v}" for k, v in c.get("overrides", {}).items()) or "-",
             c.get("description", "")] for c in study.configurations]
    return _table(["configuration", "preset", "overrides", "description"], rows)


def _scores(study: Study, stats: dict[str, Any]) -> str:
    """A table per game; a configuration with nothing finished yet still has its row."""
    parts = []
    for game in study.games:
        rows = []
        for name in study.configuration_names:
            planned = [t for t in study.trials if t.configuration == name and t.game == game]
            if not planned:
                continue
            result = next((r for r in stats["results"]
                           if r["configuration"] == name and r["game"] == game), None)
            if result is None:
                rows.append([name, f"0 of {len(planned)}", "-", "-", "-", "-", ""])
                continue
            scores = ", ".join(f"seed {s}: {v:.1f}"
                               for s, v in zip(result["seeds"], result["scores"], strict=True))
            rows.append([name, f"{result['num_seeds']} of {len(planned)}", scores,
                         format_estimate(result["mean"]), format_estimate(result["median"]),
                         format_estimate(result["iqm"]),
                         ONE_SEED if result["num_seeds"] == 1 else ""])
        ci = f"[{CONFIDENCE:.0%} CI]"
        parts += [f"<h3>{_e(game)}</h3>",
                  _table(["configuration", "seeds finished", "score of each seed",
                          f"mean {ci}", f"median {ci}", f"IQM {ci}", "note"], rows)]
    return "\n".join(parts)


def _improvement(study: Study, stats: dict[str, Any]) -> str:
    if not stats["improvement"]:
        return _hint("Needs two configurations of a game with finished trials.")
    parts = []
    for game in study.games:
        rows = [[r["x"], r["y"], f"{r['probability']:.2f}", f"[{r['low']:.2f}, {r['high']:.2f}]",
                 ONE_SEED if min(r["seeds_x"], r["seeds_y"]) == 1 else ""]
                for r in stats["improvement"] if r["game"] == game]
        if rows:
            parts += [f"<h3>{_e(game)}</h3>",
                      _table(["X", "Y", "P(X > Y)", f"{CONFIDENCE:.0%} CI", "note"], rows)]
    return "\n".join(parts)


def _trials(study: Study) -> str:
    parts = [_table(["run", "configuration", "game", "seed", "status", "score", "train time",
                     "error and log"], [_trial_row(t) for t in study.trials])]
    pending = [t for t in study.trials if t.status == "pending"]
    if pending:
        some = len(pending) > 1
        parts.append(_hint(f"{len(pending)} trial{'s' * some} pending; to finish "
                           f"{'them' if some else 'it'}: atari-rl study "
                           f"{shlex.quote(str(study.path))}"))
    return "\n".join(parts)


def _trial_row(trial: TrialResult) -> list[Any]:
    detail = " ; ".join(part for part in (
        trial.error or "", f"log: {trial.log}" if trial.log and trial.status == "failed" else ""
    ) if part)
    return [trial.run, trial.configuration, trial.game, trial.seed, trial.status,
            "-" if trial.score is None else f"{trial.score:.1f}",
            "-" if trial.train_seconds is None else format_duration(trial.train_seconds), detail]
