"""The training loop's reactions to a sign of collapse: stop, roll back, warn."""

import csv
import math

import numpy as np
import torch

from atari_rl import training
from atari_rl.a2c import A2CAgent, A2CConfig
from atari_rl.checkpoints import best_checkpoint, list_checkpoints, load_checkpoint
from atari_rl.cli import main
from atari_rl.envs import Episode
from atari_rl.run_files import EVENTS_FILE
from tests.tasks import CueTask


def events(run_dir):
    with (run_dir / EVENTS_FILE).open() as handle:
        return list(csv.DictReader(handle))


def test_a_learning_rate_far_too_large_stops_the_run_cleanly(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", "--steps", "4000", "--num-envs", "4", "--no-compile", "--optimizer",
                 "adam", "--learning-rate", "1000", "--on-cliff", "stop", "--run-dir",
                 str(run_dir)])
    assert code == 3
    assert "non_finite" in capsys.readouterr().err.strip().splitlines()[-1]
    [event] = events(run_dir)
    assert (event["kind"], event["reaction"]) == ("non_finite", "stop")
    _, state = load_checkpoint(list_checkpoints(run_dir)[-1])
    assert state["reason"] == "cliff"


class SabotagedA2C(A2CAgent):
    """Learns normally, then at one update its weights turn to NaN, as after a blow-up."""

    sabotage_at_update = 30

    def __init__(self, *args):
        super().__init__(*args)
        self.updates = 0

    def observe(self, obs, step, agent_step):
        stats = super().observe(obs, step, agent_step)
        if stats is not None:
            self.updates += 1
            if self.updates == self.sabotage_at_update:
                with torch.no_grad():
                    for parameter in self.network.parameters():
                        parameter.fill_(math.nan)
                stats["critic_loss"] = math.nan
        return stats


def sabotaged_run(tmp_path, monkeypatch, on_cliff):
    monkeypatch.setattr(training, "make_agent", lambda config, n, device: SabotagedA2C(
        config, n, device))
    config = A2CConfig(num_envs=4, n_steps=5, steps=4 * 5 * 50, compile=False, bf16=False,
                       checkpoint_every=4 * 5 * 10, log_every=200, on_cliff=on_cliff,
                       cliff_lr_factor=0.25)
    config.validate()
    return config, training.train(config, tmp_path, CueTask(config.num_envs))


def test_rollback_restores_the_best_checkpoint_with_a_lower_learning_rate(tmp_path, monkeypatch):
    config, summary = sabotaged_run(tmp_path, monkeypatch, "rollback")
    assert summary["agent_steps"] == config.steps  # training went on to the end
    [event] = events(tmp_path)
    assert (event["kind"], event["reaction"]) == ("non_finite", "rollback")
    assert int(event["step"]) == 4 * 5 * 30
    tensors, state = load_checkpoint(list_checkpoints(tmp_path)[-1])
    assert state["lr_scale"] == 0.25
    assert all(torch.isfinite(t).all() for name, t in tensors.items() if name.startswith("net"))
    assert best_checkpoint(tmp_path) is not None


def test_warn_on_nan_weights_stops_instead(tmp_path, monkeypatch):
    try:
        sabotaged_run(tmp_path, monkeypatch, "warn")
    except training.CliffStopped as stopped:
        assert "non_finite" in str(stopped)
    else:
        raise AssertionError("a run with NaN weights went on")
    assert events(tmp_path)[0]["reaction"] == "stop"


def test_warn_logs_a_score_collapse_and_goes_on(tmp_path, monkeypatch):
    config = A2CConfig(num_envs=4, n_steps=5, steps=4 * 5 * 30, compile=False, bf16=False,
                       log_every=200)
    config.validate()
    board_scores = iter(np.r_[np.full(100, 50.0), np.zeros(10_000)])

    class ScoredCue(CueTask):
        def step(self, actions):
            step = super().step(actions)
            step.games = [Episode(0, float(next(board_scores)), 10)
                          for _ in range(8)]
            return step

    summary = training.train(config, tmp_path, ScoredCue(config.num_envs))
    assert summary["agent_steps"] == config.steps
    kinds = {(e["kind"], e["reaction"]) for e in events(tmp_path)}
    assert ("score_collapse", "warn") in kinds
