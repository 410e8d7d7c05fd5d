"""A2C: rollout bookkeeping for N-step and whole-episode rollouts, and learning a tiny task."""

import numpy as np
import torch

from atari_rl.a2c import A2CConfig
from atari_rl.envs import Step
from atari_rl.rollout import Rollout
from atari_rl.run_files import FINAL_POLICY, METRICS_FILE
from atari_rl.training import train
from tests.tasks import CueTask, assert_learned_the_cue


def make_step(done=(False, False), first=(False, False), reward=(0.0, 0.0)) -> Step:
    n = len(done)
    return Step(obs=np.zeros((n, 4, 84, 84), np.uint8), reward=np.array(reward, np.float32),
                raw_reward=np.array(reward, np.float32), terminated=np.array(done),
                truncated=np.zeros(n, bool), first=np.array(first),
                actions=np.zeros(n, np.int64))


def tagged_obs(t: int) -> np.ndarray:
    """Stacks whose pixels record the row they were taken at."""
    return np.full((2, 4, 84, 84), t, np.uint8)


def test_n_step_rollout_is_ready_after_n_rows_and_masks_reset_steps():
    rollout = Rollout(num_envs=2, n_steps=3, max_rows=100)
    steps = [make_step(), make_step(done=(True, False)), make_step(first=(True, False))]
    for t, step in enumerate(steps):
        assert not rollout.ready()
        rollout.add(tagged_obs(t), step)
    assert rollout.ready()
    batch = rollout.take()
    assert batch.obs.shape == (3, 2, 4, 84, 84)
    np.testing.assert_array_equal(batch.mask, [[True, True], [True, True], [False, True]])
    assert len(rollout) == 0


def test_episode_rollout_waits_for_every_env_and_keeps_the_unfinished_episode():
    rollout = Rollout(num_envs=2, n_steps="episode", max_rows=100)
    # env 0 ends its episode at row 1, env 1 at row 3; env 0 plays on into its next one.
    steps = [make_step(), make_step(done=(True, False)), make_step(first=(True, False)),
             make_step(done=(False, True))]
    for t, step in enumerate(steps):
        assert not rollout.ready()
        rollout.add(tagged_obs(t), step)
    assert rollout.ready()
    batch = rollout.take()
    # env 0 learns from rows 0-1 (its whole episode), env 1 from rows 0-3.
    np.testing.assert_array_equal(batch.mask, [[True, True], [True, True], [False, True],
                                               [False, True]])
    # Rows 2-3 stay: env 0's new episode (row 2 is its reset step, row 3 its first action).
    assert len(rollout) == 2
    rollout.add(tagged_obs(4), make_step(first=(False, True)))
    rollout.add(tagged_obs(5), make_step(done=(True, False)))
    assert not rollout.ready()  # env 1 has not finished an episode since the update
    rollout.add(tagged_obs(6), make_step(first=(True, False)))
    rollout.add(tagged_obs(7), make_step(done=(False, True)))
    batch = rollout.take()
    assert batch.obs[0, 0, 0, 0, 0] == 2  # the kept rows come first
    np.testing.assert_array_equal(batch.mask[:, 0], [False, True, True, True, False, False])
    np.testing.assert_array_equal(batch.mask[:, 1], [False, False, False, True, True, True])


def test_capped_episode_rollout_bootstraps_like_a_truncation():
    rollout = Rollout(num_envs=2, n_steps="episode", max_rows=2)
    rollout.add(tagged_obs(0), make_step())
    rollout.add(tagged_obs(1), make_step(done=(True, False)))
    assert rollout.ready()
    batch = rollout.take()
    np.testing.assert_array_equal(batch.truncated[-1], [False, True])
    assert batch.mask.all()


def test_a2c_learns_a_tiny_task(tmp_path):
    torch.manual_seed(0)
    config = A2CConfig(num_envs=16, n_steps=2, steps=16 * 2 * 30, compile=False, bf16=False,
                       optimizer="adam", learning_rate=1e-3, lr_schedule="constant",
                       log_every=2_000, seed=0)
    config.validate()
    train(config, tmp_path, CueTask(config.num_envs, seed=1))
    assert_learned_the_cue(tmp_path / FINAL_POLICY)
    metrics = (tmp_path / METRICS_FILE).read_text().splitlines()
    assert metrics[0].startswith("step,actor_loss,critic_loss,entropy")
