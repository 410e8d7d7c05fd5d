"""`atari-rl plot`: the write-up's figures from a run's CSV files, for A2C and DQN runs alike,
one run or several overlaid."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from PIL import Image

from atari_rl.cli import main
from atari_rl.metrics import GAMES_COLUMNS
from atari_rl.plots import (
    Panel,
    _draw_reference,
    figure_specs,
    figure_title,
    game_series,
    load_run,
    rolling_mean,
)
from atari_rl.run_files import CONFIG_FILE, FIGURES_DIR, GAMES_FILE, METRICS_FILE

A2C_COLUMNS = {"step", "actor_loss", "critic_loss", "entropy", "value_mean", "max_action_prob",
               "explained_variance", "grad_norm", "learning_rate", "steps_per_s", "games",
               "score_mean100", "score_mean20", "best_score"}
WRITE_UP = {"score.png", "best_score.png", "episode_length.png", "entropy.png", "losses.png"}


def test_a_run_writes_the_columns_the_figures_read(tiny_run):
    with (tiny_run / METRICS_FILE).open() as handle:
        assert set(next(csv.reader(handle))) >= A2C_COLUMNS
    with (tiny_run / GAMES_FILE).open() as handle:
        assert next(csv.reader(handle)) == GAMES_COLUMNS
    run = load_run(tiny_run)
    assert len(run.metrics["step"]) == 10 and len(run.games["score"]) >= 2


def test_plot_writes_the_write_ups_figures_and_more(run_copy, capsys):
    run = run_copy()
    assert main(["plot", str(run)]) == 0
    written = {p.name for p in (run / FIGURES_DIR).iterdir()}
    assert written == WRITE_UP | {"value.png", "grad_norm.png", "learning_rate.png",
                                  "speed.png"}
    assert capsys.readouterr().out.count("figures/") == len(written)
    for name in written:
        with Image.open(run / FIGURES_DIR / name) as image:
            assert image.format == "PNG" and image.width >= 800


def test_columns_an_algorithm_lacks_are_skipped(run_copy, tiny_dqn_run):
    run = run_copy(tiny_dqn_run, "dqn")
    assert main(["plot", str(run)]) == 0
    written = {p.name for p in (run / FIGURES_DIR).iterdir()}
    assert {"losses.png", "value.png", "epsilon.png", "score.png"} <= written
    assert "entropy.png" not in written and "learning_rate.png" not in written


def test_several_runs_overlay_on_a_games_axis(tmp_path, tiny_run, tiny_dqn_run):
    out = tmp_path / "compared"
    assert main(["plot", str(tiny_run), str(tiny_dqn_run), "--x", "games", "--out",
                 str(out)]) == 0
    assert WRITE_UP | {"epsilon.png"} <= {p.name for p in out.iterdir()}
    assert not (tiny_run / FIGURES_DIR).exists()


def test_the_uniform_policy_line_is_at_ln_num_actions(tiny_run):
    from matplotlib.figure import Figure

    axes = Figure().subplots()
    _draw_reference(axes, Panel("entropy", "", reference="uniform entropy"), [load_run(tiny_run)])
    assert axes.lines[0].get_ydata()[0] == pytest.approx(math.log(4)) == pytest.approx(1.386,
                                                                                      abs=1e-3)
    assert "ln 4 = 1.386" in axes.lines[0].get_label()


def test_rolling_means_and_best_score_follow_the_games():
    assert np.allclose(rolling_mean(np.array([1.0, 2.0, 3.0, 4.0]), 2), [1.0, 1.5, 2.5, 3.5])
    series = game_series({"step": np.array([10.0, 20.0, 30.0]), "score": np.array([2.0, 0.0, 5.0]),
                          "length": np.array([100.0, 50.0, 300.0])})
    assert list(series["best"]) == [2.0, 2.0, 5.0]
    assert list(series["number"]) == [1.0, 2.0, 3.0]
    assert series["mean20"][-1] == pytest.approx(7 / 3)


@pytest.mark.parametrize(("setup", "extra", "complaint"), [
    ("missing", [], "does not exist"),
    ("not_a_run", [], "is not a run directory"),
    ("empty_run", [], "has no metrics.csv or games.csv rows yet"),
    ("two_runs", [], "several runs need --out"),
    ("run", ["--x", "frames"], "invalid choice: 'frames'"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, run_copy, capsys, setup,
                                                        extra, complaint):
    targets = [tmp_path / "missing"]
    if setup == "not_a_run":
        targets = [tmp_path]
    elif setup == "empty_run":
        (tmp_path / CONFIG_FILE).write_text('{"algo": "a2c", "game": "breakout"}')
        targets = [tmp_path]
    elif setup in ("two_runs", "run"):
        targets = [run_copy(name="a")] + ([run_copy(name="b")] if setup == "two_runs" else [])
    before = set(tmp_path.rglob("*"))
    assert main(["plot", *map(str, targets), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert complaint in err and len(err.splitlines()) == 1
    assert set(tmp_path.rglob("*")) == before


def test_each_figure_is_titled_after_the_panels_it_draws():
    """Figures of one name are merged across algorithms; the title must follow what is drawn,
    not whichever algorithm registered that name first."""
    groups = {group[0].name: group for group in figure_specs()}
    losses, rate = groups["losses"], groups["learning_rate"]
    by_column = {panel.column: panel for spec in (*losses, *rate) for panel in spec.panels}
    assert figure_title(losses, [by_column["td_loss"]]) == "Losses (the TD loss on a log scale)"
    assert "critic" in figure_title(losses, [by_column["actor_loss"], by_column["critic_loss"]])
    assert figure_title(losses, [by_column["value_loss"]]).startswith("Losses (the value loss")
    # A2C logs a learning rate and no clip range: the common title, not PPO's
    assert figure_title(rate, [by_column["learning_rate"]]) == "Learning rate"
    assert figure_title(rate, [by_column["learning_rate"], by_column["clip_range"]]) == (
        "Learning rate and clip range")
    # an A2C run and a DQN run overlaid: both titles
    both = figure_title(losses, [by_column["critic_loss"], by_column["td_loss"]])
    assert "critic" in both and "TD loss" in both
