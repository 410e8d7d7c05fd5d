"""load_policy and `atari-rl evaluate`, on a tiny real run: exactly N whole games under the
stated protocol, statistics that match the per-game scores, and clear refusals."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from atari_rl import load_policy
from atari_rl.checkpoints import save_tensors
from atari_rl.cli import main
from atari_rl.evaluation import game_shares, summarize
from atari_rl.networks import QNetwork
from atari_rl.policy import PolicyError
from atari_rl.run_files import (
    CHECKPOINT_DIR,
    CHECKPOINT_STATE,
    CHECKPOINT_TENSORS,
    CONFIG_FILE,
    EVALUATION_FILE,
    FINAL_POLICY,
    RANDOM_EVALUATION_FILE,
)

OBS = np.random.default_rng(0).integers(0, 256, (5, 4, 84, 84), dtype=np.uint8)


def test_load_policy_reads_a_run_directory_or_its_file(tiny_run):
    trained = load_file(str(tiny_run / FINAL_POLICY))
    for path in (tiny_run, tiny_run / FINAL_POLICY):
        policy = load_policy(path)
        assert (policy.algo, policy.game, policy.num_actions) == ("a2c", "breakout", 4)
        assert policy.action_names == ("NOOP", "FIRE", "RIGHT", "LEFT")
        for name, tensor in policy.network.state_dict().items():
            assert torch.equal(tensor, trained[name])
        probs = policy.action_values(OBS)
        assert probs.shape == (5, 4) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        actions = policy.act(OBS)
        assert actions.dtype == np.int64 and (actions == probs.argmax(axis=1)).all()


def test_dqn_policies_give_q_values_and_dueling_is_read_from_the_tensor_names(
        tiny_dqn_run, tmp_path):
    policy = load_policy(tiny_dqn_run)
    assert policy.algo == "dqn" and policy.network.dueling
    with torch.no_grad():
        expected = policy.network(torch.from_numpy(OBS)).numpy()
    assert np.allclose(policy.action_values(OBS), expected)
    assert policy.values_label == "Q-values"

    plain = tmp_path / "plain.safetensors"
    save_tensors(plain, QNetwork(4).state_dict(), {"algo": "dqn", "game": "breakout"})
    assert not load_policy(plain).network.dueling


def test_a_training_checkpoint_is_a_policy_too(run_copy):
    """RUN/checkpoints/step-N/: state.safetensors (network.* among optimizer tensors, no
    algo in its metadata) and state.json (algo, game); outputs go beside, not inside it."""
    run = run_copy()
    trained = load_file(str(run / FINAL_POLICY))
    checkpoint = run / CHECKPOINT_DIR / "step-000000000123"
    checkpoint.mkdir(parents=True)
    save_tensors(checkpoint / CHECKPOINT_TENSORS,
                 {**{f"network.{k}": v for k, v in trained.items()},
                  "optimizer.0.step": torch.zeros(1)}, {"step": "123"})
    (checkpoint / CHECKPOINT_STATE).write_text(json.dumps({"step": 123, "algo": "a2c",
                                                       "game": "breakout"}))
    for path in (checkpoint, checkpoint / CHECKPOINT_TENSORS):
        policy = load_policy(path)
        assert policy.algo == "a2c" and policy.game == "breakout"
        for name, tensor in policy.network.state_dict().items():
            assert torch.equal(tensor, trained[name])
    assert main(["evaluate", str(checkpoint), "--games", "1", "--max-frames", "200"]) == 0
    assert (checkpoint.parent / f"step-000000000123.{EVALUATION_FILE}").is_file()

    # Policy.save: the checkpoint's network alone, a policy file with its algo and game
    exported = run / "exported.safetensors"
    load_policy(checkpoint).save(exported)
    assert set(load_file(str(exported))) == set(trained)  # no optimizer tensors
    again = load_policy(exported)
    assert (again.algo, again.game, again.num_actions) == ("a2c", "breakout", 4)
    for name, tensor in again.network.state_dict().items():
        assert torch.equal(tensor, trained[name])
    assert not (checkpoint / EVALUATION_FILE).exists()
    assert not (run / EVALUATION_FILE).exists()


def test_epsilon_greedy_takes_a_random_action_at_the_stated_rate(tiny_run):
    policy = load_policy(tiny_run)
    obs = np.repeat(OBS[:1], 2000, axis=0)
    best = policy.act(obs[:1])[0]
    policy.epsilon = 0.4
    changed = (policy.act(obs, greedy=False) != best).mean()
    assert changed == pytest.approx(0.4 * 3 / 4, abs=0.04)  # a random pick can be the best


@pytest.mark.parametrize(("make", "complaint"), [
    (lambda d: d / "missing", "does not exist"),
    (lambda d: d, "is not a run directory"),
    (lambda d: _write(d / "notes.txt", "hello"), "neither a run directory"),
    (lambda d: _write(d / "bad.safetensors", "not tensors"), "not a readable safetensors"),
])
def test_load_policy_refuses_what_is_not_a_policy(tmp_path, make, complaint):
    with pytest.raises(PolicyError, match=complaint):
        load_policy(make(tmp_path))


def test_game_shares_are_fixed_up_front_and_even():
    assert game_shares(10, 4) == [3, 3, 2, 2]
    assert game_shares(3, 3) == [1, 1, 1]
    assert sum(game_shares(100, 8)) == 100


def test_evaluate_plays_exactly_n_games_and_saves_their_statistics(run_copy, capsys):
    run = run_copy()
    args = ["evaluate", str(run), "--games", "3", "--num-envs", "2", "--max-frames", "2000"]
    assert main(args) == 0
    result = json.loads((run / EVALUATION_FILE).read_text())
    scores = result["scores"]
    assert result["games"] == len(scores) == 3
    assert Counter(result["env_ids"]) == {0: 2, 1: 1}  # the shares, not the first to finish
    assert result["mean"] == pytest.approx(np.mean(scores))
    assert result["median"] == pytest.approx(np.median(scores))
    assert result["std"] == pytest.approx(np.std(scores))
    assert (result["min"], result["max"]) == (min(scores), max(scores))
    assert all(s == int(s) and s >= 0 for s in scores)  # raw points, not clipped rewards
    protocol = result["protocol"]
    assert protocol["epsilon"] == 0.01 and not protocol["greedy"]
    assert protocol["max_frames_per_game"] == 2000 and protocol["noop_max"] == 30
    assert protocol["sticky_action_prob"] == 0.0 and protocol["fire_after_life_loss"]
    assert all(length <= 2000 / 4 for length in result["lengths"])
    # By default the three protocols are played and printed side by side, one row each.
    assert list(result["protocols"]) == ["epsilon", "greedy", "sticky"]
    assert result["protocols"]["epsilon"]["scores"] == scores  # the headline is the first
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    for name, played in result["protocols"].items():
        assert played["games"] == 3
        assert f"{played['mean']:.1f}" in rows[name]
    assert result["protocols"]["greedy"]["protocol"]["greedy"]
    assert result["protocols"]["sticky"]["protocol"]["sticky_action_prob"] == 0.25


def test_one_protocol_prints_every_score(run_copy, capsys):
    run = run_copy()
    assert main(["evaluate", str(run), "--games", "2", "--num-envs", "2", "--max-frames",
                 "1000", "--greedy"]) == 0
    result = json.loads((run / EVALUATION_FILE).read_text())
    assert list(result["protocols"]) == ["greedy"]
    out = capsys.readouterr().out
    assert f"mean {result['mean']:.2f}" in out
    assert "scores: " + " ".join(f"{s:g}" for s in result["scores"]) in out


def test_random_baseline_is_saved_separately_and_is_seeded(run_copy):
    run = run_copy()
    (run / FINAL_POLICY).unlink()  # a run still training can have its baseline
    args = ["evaluate", str(run), "--policy", "random", "--games", "2", "--max-frames", "1500"]
    assert main(args) == 0
    first = json.loads((run / RANDOM_EVALUATION_FILE).read_text())
    assert not (run / EVALUATION_FILE).exists()
    assert first["policy"] == "random" and first["games"] == 2
    assert main(args) == 0
    assert json.loads((run / RANDOM_EVALUATION_FILE).read_text())["scores"] == first["scores"]


def test_greedy_and_sticky_flags_are_part_of_the_saved_protocol(run_copy):
    run = run_copy()
    out = run / "greedy-sticky.json"
    assert main(["evaluate", str(run / FINAL_POLICY), "--games", "1", "--greedy",
                 "--sticky", "--max-frames", "400", "--out", str(out)]) == 0
    protocol = json.loads(out.read_text())["protocol"]
    assert protocol["greedy"] and protocol["epsilon"] == 0.0
    assert protocol["sticky_action_prob"] == 0.25 and protocol["num_envs"] == 1


def test_summary_uses_the_population_standard_deviation():
    assert summarize([1.0, 3.0]) == {"mean": 2.0, "median": 2.0, "std": 1.0, "min": 1.0,
                                     "max": 3.0}
    assert not math.isnan(summarize([4.0])["std"])


@pytest.mark.parametrize(("setup", "extra", "complaint"), [
    ("missing", [], "does not exist"),
    ("not_a_run", [], "is not a run directory"),
    ("no_policy", [], "has no policy.safetensors yet"),
    ("unknown_game", ["--policy", "random"], "unknown game 'nosuchgame'"),
    ("none", ["--policy", "random", "--game", "nosuchgame"], "unknown game 'nosuchgame'"),
    ("none", [], "give a RUN_DIR or CHECKPOINT"),
    ("run", ["--games", "0"], "--games must be at least 1"),
    ("run", ["--max-frames", "2"], "--max-frames must be at least 4"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, run_copy, capsys, setup,
                                                        extra, complaint):
    target = _bad_target(tmp_path, run_copy, setup)
    before = set(tmp_path.rglob("*"))
    assert main(["evaluate", *([str(target)] if target else []), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert complaint in err and len(err.splitlines()) == 1
    assert set(tmp_path.rglob("*")) == before


def _bad_target(tmp_path, run_copy, setup):
    if setup == "missing":
        return tmp_path / "missing"
    if setup == "not_a_run":
        _write(tmp_path / "notes" / "notes.txt", "mine")
        return tmp_path / "notes"
    if setup == "none":
        return None
    run = run_copy()
    if setup == "no_policy":
        (run / FINAL_POLICY).unlink()
    if setup == "unknown_game":
        config = json.loads((run / CONFIG_FILE).read_text())
        (run / CONFIG_FILE).write_text(json.dumps({**config, "game": "nosuchgame"}))
    return run


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_an_unknown_protocol_is_one_line(run_copy, capsys):
    run = run_copy()
    assert main(["evaluate", str(run), "--protocols", "greedy,lazy"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown protocol 'lazy'" in err and len(err.splitlines()) == 1
    assert main(["evaluate", str(run), "--protocols", "greedy", "--sticky"]) == 2
    assert "not both" in capsys.readouterr().err
