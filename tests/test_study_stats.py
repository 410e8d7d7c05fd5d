"""A study directory's aggregate, figures and report, on study directories written by hand:
no training and no Ray, and numbers small enough to check by hand."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from PIL import Image

from atari_rl.run_files import (
    CONFIG_FILE,
    EVALUATION_FILE,
    FIGURES_DIR,
    GAMES_FILE,
    REPORT_FILE,
    TRIAL_FILE,
)
from atari_rl.study_plots import write_study_figures
from atari_rl.study_report import build_study_report, format_estimate, write_study_report
from atari_rl.study_stats import (
    AGGREGATE_FILE,
    aggregate,
    band_on_grid,
    cached_aggregate,
    improvement,
    interval_estimates,
    is_study_dir,
    learning_curves,
    load_study,
    write_aggregate,
)

REPS = 2000
GAME = "breakout"
STRONG, WEAK = "entropy-0.1", "entropy-0.01"
# evaluation means by configuration and seed: STRONG beats WEAK on every seed
SCORES = {STRONG: {0: 10.0, 1: 20.0, 2: 60.0}, WEAK: {0: 1.0, 1: 2.0, 2: 3.0}}
# training games of STRONG at agent steps 100, 200, 300, 400, and their 100-game means
GAMES = {0: [2, 4, 6, 8], 1: [0, 2, 4, 6], 2: [4, 4, 4, 4]}
STEPS = [100, 200, 300, 400]
PENDING_GAMES = [10, 20]  # STRONG's seed 3, still running: two games, at steps 100 and 200
ERROR = "RuntimeError: the emulator died"
NAME = "write-up-entropy"


def run_name(configuration: str, seed: int) -> str:
    return f"{configuration}-{GAME}-seed{seed}"


def write_games(run_dir: Path, scores: list[float], steps: list[int]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / GAMES_FILE).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "env_id", "score", "length"])
        for step, score in zip(steps, scores, strict=True):
            writer.writerow([step, 0, score, 50])


def finish(run_dir: Path, configuration: str, seed: int, score: float) -> None:
    evaluation = {"mean": score, "median": score, "std": 0.0, "min": score, "max": score,
                  "games": 2, "scores": [score, score], "protocol": {"seed": 0}}
    (run_dir / EVALUATION_FILE).write_text(json.dumps(evaluation))
    trial = {"status": "finished", "configuration": configuration, "game": GAME, "seed": seed,
             "score": score, "error": None, "log": str(run_dir / "train.log"),
             "train_seconds": 3725.0}
    (run_dir / TRIAL_FILE).write_text(json.dumps(trial))


def make_study(root: Path) -> Path:
    """2 configurations x 3 finished seeds, plus WEAK's seed 3 failed and STRONG's seed 3
    pending (two training games logged so far)."""
    study = root / "study"
    configurations = [{"name": name, "preset": "seed-n20", "overrides": {"entropy_coef": c},
                       "description": f"entropy {c}"} for name, c in ((STRONG, 0.1),
                                                                     (WEAK, 0.01))]
    trials = [{"run": run_name(c, s), "configuration": c, "game": GAME, "seed": s}
              for c in (STRONG, WEAK) for s in range(4)]
    study.mkdir()
    (study / "study.json").write_text(json.dumps({
        "format": 1, "id": "3f2a", "name": NAME, "description": "Does entropy 0.1 help?",
        "spec": {"steps": 400, "games": 2, "seeds": [0, 1, 2, 3], "game": [GAME]},
        "configurations": configurations, "trials": trials}))
    for configuration in (STRONG, WEAK):
        for seed, score in SCORES[configuration].items():
            run_dir = study / "runs" / run_name(configuration, seed)
            (run_dir).mkdir(parents=True)
            (run_dir / CONFIG_FILE).write_text(json.dumps({"algo": "a2c", "game": GAME,
                                                             "seed": seed}))
            if configuration == STRONG:
                write_games(run_dir, GAMES[seed], STEPS)
            finish(run_dir, configuration, seed, score)
    write_games(study / "runs" / run_name(STRONG, 3), PENDING_GAMES, STEPS[:2])
    failed = study / "runs" / run_name(WEAK, 3)
    write_games(failed, [100, 100], STEPS[:2])  # a failed run's curve is left out
    (failed / TRIAL_FILE).write_text(json.dumps({
        "status": "failed", "configuration": WEAK, "game": GAME, "seed": 3, "score": None,
        "error": ERROR, "log": str(failed / "train.log"), "train_seconds": 30.0}))
    return study


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    return make_study(tmp_path)


@pytest.fixture(scope="module")
def stats(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return aggregate(load_study(make_study(tmp_path_factory.mktemp("stats"))), reps=REPS)


def result(stats: dict, configuration: str) -> dict:
    return next(r for r in stats["results"] if r["configuration"] == configuration)


def pair(stats: dict, x: str, y: str) -> dict:
    return next(r for r in stats["improvement"] if (r["x"], r["y"]) == (x, y))


# --- reading a study ------------------------------------------------------------------------

def test_load_study_reads_each_trials_outcome(study_dir):
    study = load_study(study_dir)
    assert is_study_dir(study_dir) and study.name == NAME
    assert study.configuration_names == [STRONG, WEAK] and study.games == [GAME]
    assert study.counts() == {"finished": 6, "failed": 1, "pending": 1, "total": 8}
    trials = {t.run: t for t in study.trials}
    failed = trials[run_name(WEAK, 3)]
    assert failed.status == "failed" and failed.error == ERROR and failed.score is None
    assert failed.log == str(study_dir / "runs" / run_name(WEAK, 3) / "train.log")
    assert trials[run_name(STRONG, 3)].status == "pending"
    assert trials[run_name(STRONG, 2)].score == 60.0


def test_a_trial_without_a_run_directory_is_pending(study_dir):
    import shutil

    shutil.rmtree(study_dir / "runs" / run_name(STRONG, 3))
    trial = next(t for t in load_study(study_dir).trials if t.run == run_name(STRONG, 3))
    assert trial.status == "pending" and trial.score is None


def test_a_directory_that_is_not_a_study_is_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="not a study directory") as error:
        load_study(tmp_path)
    assert "\n" not in str(error.value) and not is_study_dir(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        load_study(tmp_path / "nowhere")
    (tmp_path / "study.json").write_text('{"name": "half written"')
    with pytest.raises(ValueError, match="not a study description"):
        load_study(tmp_path)


# --- final scores ---------------------------------------------------------------------------

def test_point_estimates_are_numpys_and_scipys(stats):
    for configuration, by_seed in SCORES.items():
        scores = np.array(list(by_seed.values()))
        row = result(stats, configuration)
        assert row["seeds"] == [0, 1, 2] and row["scores"] == list(scores)
        assert row["num_seeds"] == 3 and row["game"] == GAME
        assert row["mean"]["estimate"] == pytest.approx(np.mean(scores))
        assert row["median"]["estimate"] == pytest.approx(np.median(scores))
        assert row["iqm"]["estimate"] == pytest.approx(scipy.stats.trim_mean(scores, 0.25))
    assert stats["trials"] == {"finished": 6, "failed": 1, "pending": 1, "total": 8}


def test_mean_median_and_iqm_differ_where_they_should():
    scores = [0, 1, 2, 3, 4, 10, 11, 100]  # IQM: mean of the middle half, 2 3 4 10
    estimates = interval_estimates(scores, reps=REPS)
    assert estimates["mean"]["estimate"] == pytest.approx(131 / 8)
    assert estimates["median"]["estimate"] == pytest.approx(3.5)
    assert estimates["iqm"]["estimate"] == pytest.approx(4.75)
    assert estimates["mean"]["high"] > estimates["mean"]["low"]


def test_each_interval_holds_its_estimate_within_the_seeds_range(stats):
    rows = [*stats["results"], {"scores": [0, 1, 2, 3, 4, 10, 11, 100],
                                **interval_estimates([0, 1, 2, 3, 4, 10, 11, 100], REPS)}]
    for row in rows:
        for name in ("mean", "median", "iqm"):
            e = row[name]
            assert min(row["scores"]) <= e["low"] <= e["estimate"] <= e["high"]
            assert e["high"] <= max(row["scores"])


def test_one_seed_gives_a_single_point_interval():
    estimates = interval_estimates([7.0], reps=REPS)
    assert all(e == {"estimate": 7.0, "low": 7.0, "high": 7.0} for e in estimates.values())


@pytest.mark.parametrize(("x", "y"), [(40.3, 44.3), (44.3, 40.3), (7.0, 7.0)])
def test_one_seed_a_side_gives_rliables_answer_without_its_bootstrap(x, y, monkeypatch):
    from rliable import library, metrics

    points, intervals = library.get_interval_estimates(
        {"pair": [np.array([[x]]), np.array([[y]])]}, metrics.probability_of_improvement,
        reps=50)
    low, high = np.ravel(intervals["pair"])
    expected = {"probability": float(points["pair"]), "low": float(low), "high": float(high)}

    def no_bootstrap(*args, **kwargs):
        raise AssertionError("a one-seed pair was bootstrapped")

    monkeypatch.setattr(library, "get_interval_estimates", no_bootstrap)
    assert improvement([x], [y]) == expected  # at the default 50,000 reps
    assert interval_estimates([x])["mean"] == {"estimate": x, "low": x, "high": x}


def test_a_configuration_better_on_every_seed_improves_with_probability_one(stats):
    better, worse = pair(stats, STRONG, WEAK), pair(stats, WEAK, STRONG)
    assert (better["probability"], better["low"], better["high"]) == (1.0, 1.0, 1.0)
    assert (worse["probability"], worse["low"], worse["high"]) == (0.0, 0.0, 0.0)
    assert better["seeds_x"] == better["seeds_y"] == 3
    assert len(stats["improvement"]) == 2  # two configurations: two ordered pairs


def test_probability_of_improvement_counts_the_pairs_a_seed_wins():
    x, y = [1.0, 5.0, 9.0], [2.0, 6.0, 3.0]  # x wins 5>2, 5>3, 9>2, 9>6, 9>3: 5 of 9
    forward, backward = improvement(x, y, reps=REPS), improvement(y, x, reps=REPS)
    assert forward["probability"] == pytest.approx(5 / 9)
    assert backward["probability"] == pytest.approx(4 / 9)
    assert 0.0 <= forward["low"] <= 5 / 9 <= forward["high"] <= 1.0


def test_the_mirror_pair_is_one_minus_the_pair(tmp_path):
    study_dir = make_study(tmp_path)
    finish(study_dir / "runs" / run_name(WEAK, 2), WEAK, 2, 15.0)  # 10 loses to 15: 8 of 9
    stats = aggregate(load_study(study_dir), reps=REPS)
    forward, mirror = pair(stats, STRONG, WEAK), pair(stats, WEAK, STRONG)
    assert forward["probability"] == pytest.approx(8 / 9) and forward["low"] < 1.0
    assert mirror["probability"] == pytest.approx(1 - forward["probability"])
    assert (mirror["low"], mirror["high"]) == pytest.approx((1 - forward["high"],
                                                             1 - forward["low"]))


def test_the_aggregate_is_deterministic_and_plain_json(study_dir, stats):
    again = aggregate(load_study(study_dir), reps=REPS)
    assert again["results"] == stats["results"]
    assert again["improvement"] == stats["improvement"]
    assert json.loads(json.dumps(again)) == again  # floats, ints, lists: no numpy types
    # three seeds have 10 distinct resamples: every interval is [min, max] whatever the seed;
    # eight seeds show that the seed is what makes it repeat
    eight = [0, 1, 2, 3, 4, 10, 11, 100]
    np.random.seed(5)
    expected = np.random.random()
    np.random.seed(5)
    interval_estimates(eight, REPS)
    assert np.random.random() == expected  # numpy's global generator is left as it was
    assert interval_estimates(eight, REPS, seed=3) == interval_estimates(eight, REPS, seed=3)
    assert interval_estimates(eight, REPS, seed=3) != interval_estimates(eight, REPS, seed=4)


def test_a_saved_aggregate_is_reused_until_a_trial_changes(study_dir):
    path = write_aggregate(study_dir, reps=100)
    assert path == study_dir / AGGREGATE_FILE
    saved = json.loads(path.read_text())
    saved["marker"] = "saved"
    path.write_text(json.dumps(saved))
    assert cached_aggregate(load_study(study_dir), reps=100)["marker"] == "saved"
    assert "marker" not in cached_aggregate(load_study(study_dir), reps=101)
    saved = json.loads(path.read_text())
    saved["marker"] = "saved"
    path.write_text(json.dumps(saved))
    finish(study_dir / "runs" / run_name(STRONG, 3), STRONG, 3, 30.0)
    fresh = cached_aggregate(load_study(study_dir), reps=101)
    assert "marker" not in fresh and result(fresh, STRONG)["num_seeds"] == 4


def test_an_aggregate_bootstraps_again_only_what_a_changed_trial_touches(study_dir,
                                                                          monkeypatch):
    import atari_rl.study_stats as study_stats

    first = aggregate(load_study(study_dir), reps=REPS)
    finish(study_dir / "runs" / run_name(WEAK, 2), WEAK, 2, 15.0)  # WEAK's scores change
    fresh = aggregate(load_study(study_dir), reps=REPS)
    bootstrapped: list[str] = []
    for name in ("interval_estimates", "improvement"):
        real = getattr(study_stats, name)
        monkeypatch.setattr(study_stats, name, lambda *args, real=real, name=name, **kwargs: (
            bootstrapped.append(name), real(*args, **kwargs))[1])
    reused = aggregate(load_study(study_dir), reps=REPS, earlier=first)
    assert reused["results"] == fresh["results"]
    assert reused["improvement"] == fresh["improvement"]
    assert bootstrapped == ["interval_estimates", "improvement"]  # WEAK's, and the pair
    bootstrapped.clear()
    assert aggregate(load_study(study_dir), reps=REPS, earlier=fresh) == fresh
    assert bootstrapped == []
    aggregate(load_study(study_dir), reps=REPS + 1, earlier=fresh)  # other settings: all again
    assert bootstrapped == ["interval_estimates", "interval_estimates", "improvement"]


# --- learning curves ------------------------------------------------------------------------

def test_learning_curves_average_the_seeds_and_span_their_range(study_dir):
    curves = learning_curves(load_study(study_dir), points=9)  # a point every 50 steps
    assert [c.configuration for c in curves] == [STRONG]  # WEAK: no games.csv, but a failed run
    curve = curves[0]
    assert curve.runs == [run_name(STRONG, s) for s in range(4)]
    assert list(curve.steps) == [0, 50, 100, 150, 200, 250, 300, 350, 400]
    # 100-game means at step 200: seeds 0-2 (2+4)/2, (0+2)/2, 4; pending seed 3 (10+20)/2
    at = list(curve.steps).index(200)
    assert curve.mean[at] == pytest.approx((3 + 1 + 4 + 15) / 4)
    assert (curve.low[at], curve.high[at], curve.count[at]) == (1, 15, 4)
    # between two games the mean is interpolated: step 150 is half way from game 1 to 2
    at = list(curve.steps).index(150)
    assert curve.mean[at] == pytest.approx((2.5 + 0.5 + 4 + 12.5) / 4)
    # the pending seed ended at step 200: beyond it only the three others count
    assert curve.mean[-1] == pytest.approx((5 + 3 + 4) / 3)
    assert (curve.low[-1], curve.high[-1], curve.count[-1]) == (3, 5, 3)
    # before any game has ended there is nothing to say
    assert np.isnan(curve.mean[0]) and np.isnan(curve.low[1]) and curve.count[0] == 0


def test_band_on_grid_keeps_the_last_of_games_ending_on_one_step():
    grid, mean, low, high, count = band_on_grid(
        [(np.array([0.0, 10.0, 10.0]), np.array([1.0, 2.0, 3.0]))], points=3)
    assert list(grid) == [0, 5, 10] and list(mean) == [1.0, 2.0, 3.0] and list(count) == [1] * 3


# --- figures and report ---------------------------------------------------------------------

def test_the_figures_are_pngs(study_dir):
    paths = write_study_figures(study_dir, reps=REPS)
    assert {p.name for p in paths} == {"learning_curves.png", "interval_estimates.png",
                                       "improvement.png"}
    for path in paths:
        assert path.parent == study_dir / FIGURES_DIR
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 800


def test_the_report_shows_the_tables_the_trials_and_the_figures(study_dir):
    out = write_study_report(study_dir, reps=REPS)
    assert out == study_dir / REPORT_FILE
    page = out.read_text()
    stats = json.loads((study_dir / AGGREGATE_FILE).read_text())  # saved for the next call
    for configuration in (STRONG, WEAK):
        row = result(stats, configuration)
        for name in ("mean", "median", "iqm"):
            assert format_estimate(row[name]) in page
    assert "seed 2: 60.0" in page and "3 of 4" in page
    assert "1.00" in page and "[1.00, 1.00]" in page and "[0.00, 0.00]" in page
    assert ERROR in page and str(study_dir / "runs" / run_name(WEAK, 3) / "train.log") in page
    assert f"atari-rl study {study_dir}" in page
    assert "1:02:05" in page  # 3,725 seconds of training
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    for source in sources:
        data = base64.b64decode(source.removeprefix("data:image/png;base64,"))
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG"


def test_a_study_with_nothing_finished_still_reports(tmp_path):
    study_dir = make_study(tmp_path)
    for path in (study_dir / "runs").glob("*/trial.json"):
        path.unlink()
    study = load_study(study_dir)
    stats = aggregate(study, reps=REPS)
    assert stats["results"] == [] and stats["improvement"] == []
    page = build_study_report(study, stats)
    assert "0 of 4" in page and "Needs two configurations" in page
    assert len(re.findall(r'src="data:image/png', page)) == 1  # the learning curves only


def test_one_seed_is_flagged(tmp_path):
    study_dir = make_study(tmp_path)
    for seed in (1, 2):
        (study_dir / "runs" / run_name(STRONG, seed) / TRIAL_FILE).unlink()
    page = build_study_report(load_study(study_dir), reps=REPS)
    assert "1 seed: the interval is a single point" in page
